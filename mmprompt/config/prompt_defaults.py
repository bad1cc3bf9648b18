"""Config keys of the prompt methods (``PROMPT.*``)."""
from .config import CfgNode as CN


def add_prompt_config(_C):
    _C.PROMPT = CN()
    _C.PROMPT.METHODS = []  # prompt modules to compose, in order, by PROMPTS registry name; [] = frozen backbone only (linear probe)
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
    _C.PROMPT.VPT.DROPOUT = 0.1  # dropout on the prompt tokens (VPT's released FGVC configs use 0.1)
    _C.PROMPT.VPT.INIT = "xavier"  # token init: xavier (VPT: uniform with the patch projection's fan), normal, vocab, sampled_vocab, text
    _C.PROMPT.VPT.INIT_TEXT = ""  # phrase for INIT text
    _C.PROMPT.VPT.TOWER = "vision"  # tower the prompts go into
    _C.PROMPT.VPT.SOURCE = "param"  # where each layer's tokens come from
    _C.PROMPT.VPT.POSITION = "prefix"  # where they are inserted: prefix = [CLS, P, patches]

    _C.PROMPT.COOP = CN()
    _C.PROMPT.COOP.N_CTX = 16  # learned context tokens (CoOp's main setting: 16, random init)
    _C.PROMPT.COOP.CTX_INIT = ""  # phrase to initialise the context from, e.g. "a photo of a"; words beyond N_CTX stay as fixed words after the context; "" = normal(0, 0.02)
    _C.PROMPT.COOP.CSC = False  # class-specific context: one context per class (needs MODEL.HEAD.NUM_CLASSES > 0, set by the model builder)
    _C.PROMPT.COOP.CLASS_TOKEN_POSITION = "end"  # class name after the context (end), between its halves (middle) or before it (front)
    _C.PROMPT.COOP.SOURCE = "param"  # where the context tokens come from

    _C.PROMPT.MAPLE = CN()
    _C.PROMPT.MAPLE.MODE = "maple"  # maple (vision prompts coupled from text prompts), deep_vision, deep_language, ivlp (independent V-L prompts): MaPLe's ablations
    _C.PROMPT.MAPLE.N_CTX = 2  # text context tokens per layer (and vision tokens in maple mode)
    _C.PROMPT.MAPLE.N_CTX_VISION = 0  # vision prompt tokens for deep_vision / ivlp; 0 = N_CTX (maple mode always uses N_CTX)
    _C.PROMPT.MAPLE.CTX_INIT = "a photo of a"  # phrase initialising the layer-0 text context; its first N_CTX tokens are learned, the rest stay as fixed words (MaPLe's code)
    _C.PROMPT.MAPLE.PROMPT_DEPTH = 9  # layers (from 0) that get prompts in each prompted tower; deeper layers let them flow through
    _C.PROMPT.MAPLE.SOURCE = "param"  # where the text prompts (and in deep_vision / ivlp the vision prompts) come from
    _C.PROMPT.MAPLE.POSITION = "prefix"  # placement of the text context (prefix = after SOT, before the class name)
    _C.PROMPT.MAPLE.VISION_POSITION = "suffix"  # placement of the vision prompts (MaPLe appends them after the patches; with no positional embedding prefix is equivalent)

    _C.PROMPT.PROMPT_TUNING = CN()
    _C.PROMPT.PROMPT_TUNING.NUM_TOKENS = 20  # soft prompt length l (Lester et al.)
    _C.PROMPT.PROMPT_TUNING.INIT = "vocab"  # vocab (first vocabulary tokens), sampled_vocab (from the 5000 first), text, normal, xavier
    _C.PROMPT.PROMPT_TUNING.INIT_TEXT = ""  # phrase for INIT text (its token count must equal NUM_TOKENS)
    _C.PROMPT.PROMPT_TUNING.TOWER = "encoder"  # tower whose input embeddings get the prompt
    _C.PROMPT.PROMPT_TUNING.SOURCE = "param"  # param, superpos (SuperPos-Prompt), residual (Residual PT) ...
    _C.PROMPT.PROMPT_TUNING.POSITION = "prefix"  # where the prompt is inserted

    _C.PROMPT.PTUNING_V2 = CN()
    _C.PROMPT.PTUNING_V2.NUM_TOKENS = 20  # prompt tokens per layer
    _C.PROMPT.PTUNING_V2.DEPTH = 0  # layers (from 0) whose prompts are replaced by their own tokens; 0 = every layer
    _C.PROMPT.PTUNING_V2.INIT = "normal"  # token init of each layer's prompt (or of the reparameterisation's input)
    _C.PROMPT.PTUNING_V2.DROPOUT = 0.1  # dropout on the prompt tokens (P-tuning v2's hidden dropout)
    _C.PROMPT.PTUNING_V2.REPARAM = False  # produce every layer's prompt from one prompt by an MLP (P-tuning v2's prefix projection)
    _C.PROMPT.PTUNING_V2.REPARAM_HIDDEN = 512  # hidden width of that MLP (P-tuning v2's prefix_hidden_size)
    _C.PROMPT.PTUNING_V2.TOWER = "encoder"  # tower the prompts go into
    _C.PROMPT.PTUNING_V2.SOURCE = "param"  # where each layer's tokens (or the MLP's input) come from
    _C.PROMPT.PTUNING_V2.POSITION = "prefix"  # where they are inserted

    _C.PROMPT.SUPERPOS = CN()
    _C.PROMPT.SUPERPOS.M = 128  # vocabulary embeddings superposed per prompt token (the paper's plateau)
    _C.PROMPT.SUPERPOS.SOFTMAX = False  # p_i = E_i softmax(p'_i) instead of E_i p'_i (the paper's appendix variant)

    _C.PROMPT.RESIDUAL = CN()
    _C.PROMPT.RESIDUAL.HIDDEN = 400  # bottleneck width of the residual MLP (Razdaibiedina et al.; SuperPos compares at 128)

    _C.PROMPT.DEPT = CN()
    _C.PROMPT.DEPT.NUM_TOKENS = 40  # short prompt length m (DePT: m=40, r=45 equals vanilla PT l=100 on T5-base)
    _C.PROMPT.DEPT.RANK = 45  # rank r of the offsets A (MAX_LEN x r) B (r x d)
    _C.PROMPT.DEPT.MAX_LEN = 256  # content positions the offsets cover (DePT's maximum input length)
    _C.PROMPT.DEPT.LAYERS = [0]  # layers before which the offsets are added (each layer its own A, B)
    _C.PROMPT.DEPT.TOKENS = "content"  # tokens offset: content (backbone tokens between start and end), backbone (also CLS/SOT/EOT), all (also prompts)
    _C.PROMPT.DEPT.INIT = "vocab"  # init of the short prompt (as PROMPT_TUNING.INIT)
    _C.PROMPT.DEPT.INIT_TEXT = ""  # phrase for INIT text
    _C.PROMPT.DEPT.TOWER = "encoder"  # tower of the prompt and the offsets
    _C.PROMPT.DEPT.SOURCE = "param"  # where the short prompt comes from
    _C.PROMPT.DEPT.POSITION = "prefix"  # where the short prompt is inserted

    _C.PROMPT.ADEPT = CN()
    _C.PROMPT.ADEPT.NUM_TOKENS = 60  # short prompt length l (ADePT on T5-base: l=60, r=19, about 76.1K parameters)
    _C.PROMPT.ADEPT.BOTTLENECK = 19  # bottleneck r of the token-shared offset MLP
    _C.PROMPT.ADEPT.LAYERS = [0]  # layers before which the offsets are added (each layer its own MLP)
    _C.PROMPT.ADEPT.TOKENS = "content"  # tokens offset: content, backbone, all (as DEPT.TOKENS)
    _C.PROMPT.ADEPT.INIT = "vocab"  # init of the short prompt (as PROMPT_TUNING.INIT)
    _C.PROMPT.ADEPT.INIT_TEXT = ""  # phrase for INIT text
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
