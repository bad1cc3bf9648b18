"""Config keys of training and evaluation (``OPTIM.*``, ``TRAIN.*``, ``TEST.*``), Dassl's names."""
from .config import CfgNode as CN


def add_engine_config(_C):
    _C.OPTIM = CN()
    _C.OPTIM.NAME = "sgd"  # optimizer: sgd, adamw, adafactor (transformers' Adafactor with a fixed lr, as T5 prompt tuning uses)
    _C.OPTIM.LR = 0.002  # base learning rate
    _C.OPTIM.WEIGHT_DECAY = 5e-4  # L2 / decoupled weight decay; parameters a method lists in no_weight_decay() get 0
    _C.OPTIM.MOMENTUM = 0.9  # SGD momentum
    _C.OPTIM.SGD_DAMPNING = 0.0  # SGD dampening (Dassl's spelling)
    _C.OPTIM.SGD_NESTEROV = False  # SGD Nesterov momentum
    _C.OPTIM.ADAM_BETA1 = 0.9  # AdamW beta1
    _C.OPTIM.ADAM_BETA2 = 0.999  # AdamW beta2
    _C.OPTIM.ADAM_EPS = 1e-8  # AdamW epsilon
    _C.OPTIM.GROUP_LR = CN(new_allowed=True)  # own lr per parameter group: a group a prompt module declares in param_groups() (e.g. DePT's offsets) or a parameter-name prefix (e.g. head), mapped to its lr
    _C.OPTIM.MAX_EPOCH = 10  # training epochs (ignored when MAX_ITER > 0)
    _C.OPTIM.MAX_ITER = 0  # > 0: train for this many optimizer steps instead of MAX_EPOCH epochs
    _C.OPTIM.LR_SCHEDULER = "cosine"  # lr schedule after warm-up: cosine, linear (to 0), constant
    _C.OPTIM.SCHEDULER_UNIT = "epoch"  # how the schedule advances: epoch (Dassl/CoOp: lr fixed within an epoch) or iter (per optimizer step, as HF schedules)
    _C.OPTIM.EPOCH_DECAY_SPAN = "max_epoch"  # epoch unit: epochs the cosine/linear decay after warm-up spans: max_epoch (Dassl's successor scheduler: MAX_EPOCH, so it never reaches 0) or after_warmup (MAX_EPOCH - WARMUP_EPOCH, reaching 0 at the end: KMnP/vpt's WarmupCosineSchedule; iter units always decay this way)
    _C.OPTIM.WARMUP_EPOCH = -1  # warm-up epochs in epoch units; <= 0 means no warm-up
    _C.OPTIM.WARMUP_ITERS = 0  # warm-up optimizer steps in iter units; 0 means no warm-up
    _C.OPTIM.WARMUP_TYPE = "linear"  # warm-up: constant (lr = WARMUP_CONS_LR) or linear (from WARMUP_MIN_LR up to the base lr)
    _C.OPTIM.WARMUP_CONS_LR = 1e-5  # lr during a constant warm-up
    _C.OPTIM.WARMUP_MIN_LR = 1e-5  # starting lr of a linear warm-up

    _C.TRAIN = CN()
    _C.TRAIN.PRECISION = "auto"  # Dassl's PREC: fp32; amp (fp16 autocast + GradScaler); fp16 (frozen backbone weights in half precision as CoOp's CLIP loading gives, prompts kept in fp32, fp16 autocast + GradScaler); fp16 and amp need a CUDA GPU. Also bf16 (autocast) and auto: bf16 on GPUs that support it, else amp on GPU, fp32 on CPU
    _C.TRAIN.GRAD_ACCUM_STEPS = 1  # batches whose gradients are summed before one optimizer step
    _C.TRAIN.GRAD_CLIP_NORM = 0.0  # clip the global gradient norm to this value; 0 disables clipping
    _C.TRAIN.CHECKPOINT_PERIOD = 0  # also save a resumable checkpoint every this many optimizer steps inside an epoch; 0 = only at epoch ends
    _C.TRAIN.PRINT_FREQ = 5  # write a train record to log.jsonl / tensorboard every this many iterations
    _C.TRAIN.EVAL_PERIOD = 1  # evaluate on the val split every this many epochs (when the dataset has one); 0 = never
    _C.TRAIN.EARLY_STOP_PATIENCE = 0  # stop after this many validations without improvement of the main metric; 0 disables
    _C.TRAIN.PROGRESS_BAR = True  # tqdm bar with loss, lr and speed on rank 0
    _C.TRAIN.VERBOSE = True  # print one summary line per epoch (mean loss, lr, step, val metric) on rank 0
    _C.TRAIN.TENSORBOARD = True  # write tensorboard scalars under OUTPUT_DIR/tensorboard
    _C.TRAIN.FIND_UNUSED_PARAMETERS = False  # DDP find_unused_parameters: set True for methods that leave some trainable parameters without gradient in a step
    _C.TRAIN.DIST_BACKEND = "auto"  # torch.distributed backend: auto (nccl on GPU, gloo on CPU), nccl (GPUs only), gloo
    _C.TRAIN.NONFINITE = "stop"  # a NaN/inf training loss or gradient (fp32, bf16): stop (before the weights change; the message names the step and the last good checkpoint) or skip (drop that update, as fp16's GradScaler does by itself; the step still counts). fp16 always skips, as AMP does
    _C.TRAIN.MAX_SKIPPED_STEPS = 20  # stop anyway after this many skipped steps in a row (skip mode and fp16), when skipping no longer recovers

    _C.TEST = CN()
    _C.TEST.EVALUATOR = ""  # evaluator in the EVALUATORS registry; "" = the dataset's own (its evaluator_name, else classification)
    _C.TEST.MAIN_METRIC = ""  # metric that picks the best epoch, stops early and enters HM; "" = the evaluator's main_metric
    _C.TEST.SPLIT = "test"  # split evaluated at the end of training and by --eval-only: test or val
    _C.TEST.FINAL_MODEL = "last_step"  # weights tested at the end: last_step or best_val (best main metric on val)
    _C.TEST.NO_TEST = False  # skip the final evaluation
    _C.TEST.BASE_TO_NOVEL = True  # when trained on SUBSAMPLE_CLASSES base, also evaluate the new classes and report base, new and HM
    _C.TEST.SAVE_RECORDS = True  # write what prompt modules record during the test (e.g. chosen dynamic positions) to prompt_records.json
