"""Config keys of the prompt methods (``PROMPT.*``)."""
from .config import CfgNode as CN


def add_prompt_config(_C):
    _C.PROMPT = CN()
    _C.PROMPT.METHODS = []  # prompt modules to compose, in order, by PROMPTS registry name; [] = frozen backbone only (linear probe)
    # Per-method values of the shared nodes: PER_METHOD.<METHOD>.<NODE>.<KEY> overrides PROMPT.<NODE>.<KEY> for
    # that method only, NODE one of DYNAMIC, SUPERPOS, RESIDUAL (e.g. PER_METHOD.VPT.DYNAMIC.GAMMA 0.1 gives VPT's
    # adap_pos its own annealing while MaPLe's keeps PROMPT.DYNAMIC's); checked by mmprompt.build.build_prompts
    _C.PROMPT.PER_METHOD = CN(new_allowed=True)
    add_method_config(_C)
    add_dynamic_config(_C)


def add_method_config(_C):
    """One node per prompt method and per token source; defaults follow each method's paper."""
    # Shared meanings: TOWER = the backbone tower the method acts on (vision, text, encoder);
    # SOURCE = PROMPT_SOURCES name the tokens come from (param, superpos, residual, pool ...);
    # POSITION = PLACEMENTS name that inserts them (prefix, suffix, middle, adap_pos ...).
    _C.PROMPT.VPT = CN()
    _C.PROMPT.VPT.NUM_TOKENS = 10  # prompt tokens per layer (VPT searches 1..200 per task)
    _C.PROMPT.VPT.DEEP = False  # False = VPT-shallow (prompts before layer 0 only); True = VPT-deep (own prompts before every layer < DEPTH)
    _C.PROMPT.VPT.DEPTH = 0  # VPT-deep: layers whose prompts are replaced by fresh ones (0 = all layers); later layers let the last ones flow through
    _C.PROMPT.VPT.DROPOUT = 0.0  # dropout on the prompt tokens; 0.0 is KMnP/vpt's MODEL.PROMPT.DROPOUT default (their demo: no dropout for VPT-shallow; 0.1 in its VPT-deep tuning commands, as the configs/vpt_deep_*.yaml recipes set)
    _C.PROMPT.VPT.INIT = "xavier"  # token init: xavier (VPT: uniform(+-sqrt(6 / (3 * ph * pw + d))) from the tower's real patch size, 16x16 on towers without patches), normal, vocab, sampled_vocab, text, text_repeat
    _C.PROMPT.VPT.INIT_TEXT = ""  # phrase for INIT text
    _C.PROMPT.VPT.TOWER = "vision"  # tower the prompts go into
    _C.PROMPT.VPT.SOURCE = "param"  # where each layer's tokens come from
    _C.PROMPT.VPT.POSITION = "prefix"  # where they are inserted: prefix = [CLS, P, patches]

    # CoOp, as KaiyangZhou/CoOp's trainers/coop.py computes it (TRAINER.COOP.* there)
    _C.PROMPT.COOP = CN()
    _C.PROMPT.COOP.N_CTX = 16  # learned context tokens when CTX_INIT is "" (CoOp's main setting: 16, normal(0, 0.02)); ignored with CTX_INIT, as in CoOp
    _C.PROMPT.COOP.CTX_INIT = ""  # phrase initialising the context, e.g. "a photo of a" (CoOp's ctxv1 recipes): one learned token per word (CoOp's rule, N_CTX ignored), "_" read as space; "" = N_CTX tokens from normal(0, 0.02)
    _C.PROMPT.COOP.CSC = False  # class-specific context, one per class (needs MODEL.HEAD.NUM_CLASSES > 0, set by the model builder); as in CoOp, a CTX_INIT context is always generic
    _C.PROMPT.COOP.CLASS_TOKEN_POSITION = "end"  # where the class name sits relative to the context, "." always after both (CoOp): end [SOT, ctx, name, ., EOT], middle [SOT, ctx/2, name, ctx/2, ., EOT], front [SOT, name, ctx, ., EOT]
    _C.PROMPT.COOP.SOURCE = "param"  # where the context tokens come from

    _C.PROMPT.COCOOP = CN()  # CoCoOp: CoOp's context plus a per-image shift from a meta-net of the image embedding
    _C.PROMPT.COCOOP.N_CTX = 4  # learned context tokens without CTX_INIT; with CTX_INIT the phrase's word count is used instead (the authors' rule)
    _C.PROMPT.COCOOP.CTX_INIT = "a photo of a"  # phrase whose first tokens (one per word) initialise the context; "" = normal(0, 0.02). Default: the authors' released recipe (vit_b16_c4_ep10_batch1_ctxv1)
    _C.PROMPT.COCOOP.META_NET_RATIO = 16  # meta-net hidden width = image embedding width // this (CoCoOp: vis_dim // 16)

    # MaPLe and the baselines of its repository (muzairkhattak/multimodal-prompt-learning), as its
    # trainers compute them: maple = trainers/maple.py (TRAINER.MAPLE.*), ivlp / deep_language =
    # trainers/independentVL.py (TRAINER.IVLP.*), deep_vision = trainers/vpt.py (TRAINER.VPT.*)
    _C.PROMPT.MAPLE = CN()
    _C.PROMPT.MAPLE.MODE = "maple"  # maple (vision prompts coupled from text prompts), ivlp (independent vision and text prompts), deep_language (text only: IVLP's language_only recipe), deep_vision (vision only: the VPT trainer, VPT-deep inside CLIP)
    _C.PROMPT.MAPLE.N_CTX = 2  # text prompt tokens per layer (MAPLE.N_CTX / IVLP.N_CTX_TEXT); in maple mode also the vision tokens
    _C.PROMPT.MAPLE.N_CTX_VISION = 0  # vision prompt tokens per layer for ivlp / deep_vision (IVLP/VPT.N_CTX_VISION); 0 = N_CTX (maple mode always uses N_CTX). The authors' 0 = "no vision prompts" is MODE deep_language here
    _C.PROMPT.MAPLE.CTX_INIT = "a photo of a"  # phrase initialising the layer-0 text context when N_CTX <= 4: its first N_CTX tokens are learned, the rest stay as fixed words; with N_CTX > 4 the authors' code ignores it (normal(0, 0.02), no fixed words), and so does this
    _C.PROMPT.MAPLE.PROMPT_DEPTH = 9  # layers 0..J-1 that get text prompts (MAPLE.PROMPT_DEPTH / IVLP.PROMPT_DEPTH_TEXT); in maple mode the vision prompts too; deeper layers let them flow through
    _C.PROMPT.MAPLE.PROMPT_DEPTH_VISION = 0  # layers that get vision prompts in ivlp / deep_vision (IVLP/VPT.PROMPT_DEPTH_VISION); 0 = PROMPT_DEPTH (maple mode always uses PROMPT_DEPTH)
    _C.PROMPT.MAPLE.SOURCE = "param"  # where the text prompts (and in deep_vision / ivlp the vision prompts) come from
    _C.PROMPT.MAPLE.POSITION = "prefix"  # placement of the text context (prefix = after SOT, before the fixed words and the class name, as the authors)
    _C.PROMPT.MAPLE.VISION_POSITION = "suffix"  # placement of the vision prompts (the authors append them after the patches; layer-0 ones go through ln_pre with them)

    _C.PROMPT.PROMPT_TUNING = CN()
    _C.PROMPT.PROMPT_TUNING.NUM_TOKENS = 20  # soft prompt length l (Lester et al.)
    _C.PROMPT.PROMPT_TUNING.INIT = "vocab"  # vocab (first vocabulary tokens), sampled_vocab (from the 5000 first), text, normal, xavier
    _C.PROMPT.PROMPT_TUNING.INIT_TEXT = ""  # phrase for INIT text (its token count must equal NUM_TOKENS)
    _C.PROMPT.PROMPT_TUNING.TOWER = "encoder"  # tower whose input embeddings get the prompt
    _C.PROMPT.PROMPT_TUNING.SOURCE = "param"  # param, superpos (SuperPos-Prompt), residual (Residual PT) ...
    _C.PROMPT.PROMPT_TUNING.POSITION = "prefix"  # where the prompt is inserted

    _C.PROMPT.PTUNING_V2 = CN()  # P-tuning v2 as THUDM/P-tuning-v2 computes it: key/value prefixes in every layer's self-attention (hf_encoder and t5 towers only)
    _C.PROMPT.PTUNING_V2.NUM_TOKENS = 20  # prefix length l: keys and values per layer and head (their pre_seq_len; run_rte_bert.sh 20, run_boolq_bert.sh 40)
    _C.PROMPT.PTUNING_V2.DEPTH = 0  # layers (from 0) that get a prefix; 0 = every layer (the authors prefix every layer)
    _C.PROMPT.PTUNING_V2.PROJECTION = False  # their prefix_projection: every layer's keys/values from an (l, d) table through Linear(d, h) -> tanh -> Linear(h, depth*2*d); False = the table holds them directly (2*depth*l*d parameters; their run scripts' setting)
    _C.PROMPT.PTUNING_V2.PROJECTION_HIDDEN = 512  # h of that MLP (their prefix_hidden_size, default 512)
    _C.PROMPT.PTUNING_V2.DROPOUT = 0.1  # dropout on the prefix keys/values, each sample its own mask (their hidden_dropout_prob, which their code also gives the frozen model and the head)
    _C.PROMPT.PTUNING_V2.POSITIONS_AFTER_PREFIX = True  # number the input's absolute positions from l, as transformers does given a prefix (the authors' code: BERT's [CLS] at position l); False = [CLS] at 0 as without a prefix (mmprompt's variant). Absolute-position towers only (not T5)
    _C.PROMPT.PTUNING_V2.INIT_STD = 0.02  # normal(0, INIT_STD) init of the prefix table and the projection weights, projection biases 0 (their from_pretrained's _init_weights, BERT/RoBERTa initializer_range 0.02)
    _C.PROMPT.PTUNING_V2.TOWER = "encoder"  # tower whose layers get the prefixes

    _C.PROMPT.DEEP_PROMPT = CN()  # deep prompts as hidden states (mmprompt's former ptuning_v2): own tokens placed before every layer, replacing the previous layer's; any tower, any placement
    _C.PROMPT.DEEP_PROMPT.NUM_TOKENS = 20  # prompt tokens per layer
    _C.PROMPT.DEEP_PROMPT.DEPTH = 0  # layers (from 0) whose prompts are replaced by their own tokens; 0 = every layer
    _C.PROMPT.DEEP_PROMPT.INIT = "normal"  # token init of each layer's prompt (or of the reparameterisation's input)
    _C.PROMPT.DEEP_PROMPT.DROPOUT = 0.1  # dropout on the prompt tokens
    _C.PROMPT.DEEP_PROMPT.REPARAM = False  # produce every layer's prompt from one prompt by an MLP Linear(d, h) -> tanh -> Linear(h, depth*d) (shaped like P-tuning v2's prefix projection)
    _C.PROMPT.DEEP_PROMPT.REPARAM_HIDDEN = 512  # hidden width h of that MLP
    _C.PROMPT.DEEP_PROMPT.TOWER = "encoder"  # tower the prompts go into
    _C.PROMPT.DEEP_PROMPT.SOURCE = "param"  # where each layer's tokens (or the MLP's input) come from
    _C.PROMPT.DEEP_PROMPT.POSITION = "prefix"  # where they are inserted

    _C.PROMPT.SUPERPOS = CN()
    _C.PROMPT.SUPERPOS.M = 128  # vocabulary embeddings superposed per prompt token (the paper's plateau)
    _C.PROMPT.SUPERPOS.SOFTMAX = False  # p_i = E_i softmax(p'_i) instead of E_i p'_i (the paper's appendix variant)

    _C.PROMPT.RESIDUAL = CN()
    _C.PROMPT.RESIDUAL.HIDDEN = 400  # bottleneck width of the residual MLP (Razdaibiedina et al.; SuperPos compares at 128)

    # DePT (ZhengxiangShi/DePT, peft/tuners/prompt_tuning_lora.py + peft_model.py): defaults are
    # what the authors' code computes; the paper's plain x + A B is SCALING none.
    _C.PROMPT.DEPT = CN()
    _C.PROMPT.DEPT.NUM_TOKENS = 40  # short prompt length m (DePT: m=40, r=45 equals vanilla PT l=100 on T5-base)
    _C.PROMPT.DEPT.RANK = 45  # rank r of the offsets A (MAX_LEN x r) B (r x d)
    _C.PROMPT.DEPT.MAX_LEN = 256  # content positions the offsets cover (DePT's maximum input length)
    _C.PROMPT.DEPT.ALPHA = 8.0  # alpha of the offset scaling (the authors' lora_alpha default, which train.py never changes)
    _C.PROMPT.DEPT.SCALING = "alpha_sqrt_rank"  # offsets added as s * A B: alpha_sqrt_rank (s = ALPHA / sqrt(RANK), 8/sqrt(45) = 1.19: the authors' code), alpha_rank (s = ALPHA / RANK, LoRA's), none (s = 1, the paper's equation)
    _C.PROMPT.DEPT.LAYERS = [0]  # layers before which the offsets are added (each layer its own A, B)
    _C.PROMPT.DEPT.TOKENS = "content"  # tokens offset: content (backbone tokens between start and end), backbone (also CLS/SOT/EOT), all (also prompts)
    _C.PROMPT.DEPT.INIT = "text_repeat"  # init of the short prompt (as PROMPT_TUNING.INIT); text_repeat = the authors' default text_init (INIT_TEXT's token ids with </s>, repeated to NUM_TOKENS)
    _C.PROMPT.DEPT.INIT_TEXT = "Classify this text is postive or not:"  # phrase for INIT text / text_repeat: the authors' train.py default, typo included
    _C.PROMPT.DEPT.TOWER = "encoder"  # tower of the prompt and the offsets
    _C.PROMPT.DEPT.SOURCE = "param"  # where the short prompt comes from
    _C.PROMPT.DEPT.POSITION = "prefix"  # where the short prompt is inserted

    # ADePT (HungerPWAY/ADePT, peft/tuners/prompt_tuning_lorax.py, the PROMPT_TUNING_LORAX branch of
    # peft_model.py): x + ReLU(dropout(x A + a)) B + b; defaults are what the authors' code computes.
    _C.PROMPT.ADEPT = CN()
    _C.PROMPT.ADEPT.NUM_TOKENS = 60  # short prompt length l (ADePT on T5-base: l=60, r=19, about 76.1K parameters)
    _C.PROMPT.ADEPT.BOTTLENECK = 19  # bottleneck r of the token-shared offset MLP
    _C.PROMPT.ADEPT.DROPOUT = 0.1  # dropout on the bottleneck (after x A + a, before the ReLU) while training: the authors' fixed p=0.1; 0.0 = none
    _C.PROMPT.ADEPT.DOWN_INIT = "adept"  # down-projection init: adept (weights U(+-1/sqrt(r)), kaiming_uniform(a=sqrt(5)) of the authors' d x r A; bias 0) or linear (nn.Linear's U(+-1/sqrt(d)) weights and bias)
    _C.PROMPT.ADEPT.LAYERS = [0]  # layers before which the offsets are added (each layer its own MLP)
    _C.PROMPT.ADEPT.TOKENS = "content"  # tokens offset: content, backbone, all (as DEPT.TOKENS)
    _C.PROMPT.ADEPT.INIT = "text_repeat"  # init of the short prompt (as PROMPT_TUNING.INIT); text_repeat = the authors' default text_init (as DEPT.INIT)
    _C.PROMPT.ADEPT.INIT_TEXT = "Classify this text is postive or not:"  # phrase for INIT text / text_repeat: the authors' train.py default, typo included
    _C.PROMPT.ADEPT.TOWER = "encoder"  # tower of the prompt and the offsets
    _C.PROMPT.ADEPT.SOURCE = "param"  # where the short prompt comes from
    _C.PROMPT.ADEPT.POSITION = "prefix"  # where the short prompt is inserted


def add_dynamic_config(_C):
    """Dynamic prompting (Yang et al., "Position Really Matters"): learned position, length, pool.

    Chosen with a method's POSITION (adap_pos, adap_ins_pos, adap_len, adap_ins_len) and SOURCE
    (pool); these keys tune them.
    """
    _C.PROMPT.DYNAMIC = CN()
    # Where the defaults below differ from the seed paper's released code (Xianjun-Yang/DPT,
    # OpenPrompt on T5), the key names the choice of the code ("dpt") next to the paper's text;
    # configs/t5_adap_*.yaml select the code's behaviour, which produced the paper's T5 numbers.
    _C.PROMPT.DYNAMIC.TAU0 = 1.0  # initial Gumbel-softmax temperature tau0 (paper and DPT code: 1.0)
    _C.PROMPT.DYNAMIC.TAU_MIN = 0.5  # floor of the temperature (paper and DPT code: 0.5)
    _C.PROMPT.DYNAMIC.GAMMA = 3e-5  # annealing rate gamma of the schedule below (paper: 3e-7, 3e-5 or 3e-3; DPT code: 3e-5)
    _C.PROMPT.DYNAMIC.STEP_SCALE = 1.0  # s of the schedule below: optimizer steps per annealing unit (paper picks from 0.1 .. 600; DPT code's --aneal default: 10)
    _C.PROMPT.DYNAMIC.SCHEDULE = "closed_form"  # temperature at optimizer step n: closed_form = max(tau0 * exp(-gamma * n / s), tau_min) (mmprompt's reading of eq. 28); compound = tau <- max(tau * exp(-gamma * t / s), tau_min) applied at every step t = 1..n, i.e. max(tau0 * exp(-gamma * n(n+1) / (2s)), tau_min) (eq. 28 as written and the DPT code: 0.5 after 680 steps at gamma 3e-5, s 10, against 231,050 for closed_form)
    _C.PROMPT.DYNAMIC.NOISE = True  # add Gumbel noise to the logits while training (False = deterministic argmax forward, softmax backward)
    _C.PROMPT.DYNAMIC.EVAL_NOISE = False  # also add Gumbel noise at evaluation (the DPT code samples the choice in eval too); False = evaluation takes the argmax
    _C.PROMPT.DYNAMIC.ARRANGEMENT = "paper"  # adap_pos / adap_ins_pos, choice j in [0, l]: paper = [P[:j]; X; P[j:]] (eq. 6: the first j tokens before the input); dpt = [P[j:]; X; P[:j]] (the DPT code: the prompt rotated, its first j tokens after the input, before </s>). Records (.dpos) count the tokens before the input either way
    _C.PROMPT.DYNAMIC.LOGIT_INIT = "zeros"  # task-level position/length logits: zeros (every choice equally likely) or uniform (U(-INIT_RANGE, INIT_RANGE), the DPT code); instance networks keep nn.Linear's init in both
    _C.PROMPT.DYNAMIC.INIT_RANGE = 0.5  # bound of the uniform inits (LOGIT_INIT / POOL_INIT uniform; the DPT code's random_range 0.5)
    _C.PROMPT.DYNAMIC.INSTANCE_RELU = True  # position/length instance networks are Linear then ReLU (paper appendix E.2 and DPT code)
    _C.PROMPT.DYNAMIC.INSTANCE_BIAS = False  # give the instance networks' Linear layers (position, length, pool router) a bias (False = exactly d*(l+1) and d*k parameters, the paper's Table 9; the DPT code's nn.Linear has one: True)
    _C.PROMPT.DYNAMIC.INSTANCE_FEATURE = "embed_mean"  # instance feature: embed_mean (masked mean of the input token embeddings, free; the paper's appendix F variant); frozen_forward (masked mean of the last layer's states of a prompt-free frozen pass in eval mode, before any final norm); frozen_output (the DPT code's LM(X): mean over every position, padding included, of the tower's output after its final norm, from a prompt-free pass in the backbone's own train/eval mode; towers exposing final(), i.e. T5)
    _C.PROMPT.DYNAMIC.FEATURE_LENGTH = 0  # frozen_output: pad the prompt-free pass to this many tokens, so the mean divides by it as OpenPrompt pads every input to max_seq_length (DPT's scripts: 480); 0 = the batch's own padded length (then a sample's feature depends on the batch)
    _C.PROMPT.DYNAMIC.LENGTH_MODE = "surrogate"  # adap_len: surrogate ([0*P_before; P_after], the paper's appendix D) or mask (dropped tokens also masked out of attention)
    _C.PROMPT.DYNAMIC.POOL_SIZE = 8  # prompts k in the pool source (paper and DPT code: 8)
    _C.PROMPT.DYNAMIC.POOL_ACTIVATION = "relu"  # pool router beta = softmax(act(Po(x))): relu (paper appendix E.2's one-layer networks), none (the DPT code's adap_ins_vec_pos / adap_pos_ins_vec), tanh (the DPT code's adap_ins_vec alone)
    _C.PROMPT.DYNAMIC.POOL_INIT = ""  # pool prompts' init: "" = the method's INIT (vocab: k different vocabulary windows, as the DPT code's adap_ins_vec); uniform = U(-INIT_RANGE, INIT_RANGE) (the DPT code's adap_ins_vec_pos / adap_pos_ins_vec)
    _C.PROMPT.DYNAMIC.CHOICE_DEPTH = 1  # layers with their own learned position/length, from the first layer a placement acts on; deeper ones reuse the last (1 = one choice for all layers, the paper's VPT-deep)
    _C.PROMPT.DYNAMIC.RECORD = True  # record the chosen position/length per layer and sample in the forward context (saved as prompt_records.json)
