#!/bin/bash
# The GPU checks (issues 18, 13 and 21) as one script for a lent GPU machine: install what the image lacks, run the
# CUDA tests, then the benchmarks whose figures the issues ask for, in order of importance, each step under its own
# time limit so that a hang costs that step, not the call. Results land in $OUT (what the device tool brings back, at
# most 8 files): check.log, gpu.csv, bench_all.json, data_augmented.json, analyze.json (bench), analyze_meta.json (the
# command). Prepare the wheels first (`tools/gpu_kit.py prepare`, here) and carry them over consecutive calls; the
# last call carries the last chunk and runs `bash tools/gpu_check.sh` with timeout_s 600. Not yet run on a GPU: the
# step limits add up to more than one call's 600 s, so if steps hang, rerun the rest on the warm machine with
# GPU_CHECK_ONLY (the installation is skipped when it is there already).
#
# GPU_CHECK_DRY=1 runs every step on the CPU with tiny sizes and the current Python environment (no installation): a
# rehearsal of the commands and their flags here, whose figures mean nothing. GPU_CHECK_ONLY=REGEX runs only the steps
# whose names match.
set -u
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
rm -f /tmp/gpu_check_steps.txt
exec > >(tee "$OUT/check.log") 2>&1
cd "$(dirname "$0")/.."
DRY=${GPU_CHECK_DRY:-0}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
# Run the installed fastpose (with its compiled parts and fastpose.kernels), not ./fastpose of the working directory,
# which `python -m` would put first on sys.path (torchrun's children too).
export PYTHONSAFEPATH=1
step() {  # step SECONDS NAME COMMAND...: one check, timed and bounded; a failure is reported and the script goes on
    local limit=$1 name=$2; shift 2
    if [ -n "${GPU_CHECK_ONLY:-}" ] && ! [[ $name =~ $GPU_CHECK_ONLY ]]; then return; fi
    local t0=$SECONDS
    echo "=== $name ($(date +%T))"
    timeout "$limit" "$@"
    local rc=$?
    echo "=== $name: rc $rc in $((SECONDS - t0)) s"
    echo "$name $rc $((SECONDS - t0))" >> /tmp/gpu_check_steps.txt
}

if [ "$DRY" = 1 ]; then
    DEV=cpu; BATCH=2; SIZE=64; ITERS=1; N=16; FRAMES=16; NET=resnet_18; FIRST=2; LAST=4
else
    DEV=cuda; BATCH=16; SIZE=368; ITERS=10; N=256; FRAMES=600; NET=resnet_101; FIRST=20; LAST=30
    # Installation: the wheels carried in .whl/c* (copied aside to /tmp/whl by the earlier calls), the big ones in parts.
    W=/tmp/whl
    mkdir -p $W
    for d in .whl/c*; do [ -d "$d" ] && cp -n "$d"/* $W/; done
    for first in $W/*.whl.part00; do
        [ -e "$first" ] || continue
        wheel=${first%.part00}
        [ -e "$wheel" ] || cat "$wheel".part* > "$wheel"
    done
    if [ ! -e /tmp/site/.done ]; then
        $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $W/*.whl || exit 1
        touch /tmp/site/.done
    fi
    export PYTHONPATH=/tmp/site
    if [ ! -e /tmp/fp/.done ]; then  # the project with its C++ parts, built there against the image's torch
        $PY -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/fp . || exit 1
        touch /tmp/fp/.done
    fi
    export PYTHONPATH=/tmp/fp:/tmp/site
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.csv"
fi
FP="$PY -m fastpose"
$PY -c "import torch, triton, nvidia.dali, fastpose; print('torch', torch.__version__, 'triton', triton.__version__,
'dali', nvidia.dali.__version__, 'cuda', torch.cuda.is_available())"
DATA=/tmp/gpu_check_data
[ -e $DATA/clip.mp4 ] || step 60 data $PY tools/gpu_kit.py data $DATA --n $N --frames $FRAMES

# 1. The CUDA tests: Triton kernels equal to their torch twins on CUDA tensors, the pipeline on the GPU, bf16 steps.
[ "$DRY" = 1 ] || step 150 cuda-tests $PY -m pytest -q -x -p no:cacheprovider -m cuda tests

# 2. Issue 18's figures: Triton targets against the torch twin; a ResNet-101 step at batch 16 (bf16 by precision:
#    auto on a bf16 card) on the synthetic --size batch; DALI on ~400 px JPEGs; end-to-end / step-only (`bench all`);
#    DALI with every augmentation on every sample.
step 150 bench-all $FP bench all --device $DEV --data $DATA/shards --set net_type=$NET --set num_joints=11 \
    --batch-size $BATCH --size $SIZE --iters $ITERS --json "$OUT/bench_all.json"
AUG=(--set 'rotation_range=[-30,30]' --set rotation_p=1 --set 'brightness_range=[0.7,1.3]'
     --set 'contrast_range=[0.7,1.3]' --set 'saturation_range=[0.7,1.3]' --set 'hue_range=[-10,10]' --set color_p=1
     --set 'gaussian_blur_range=[0.5,1.5]' --set gaussian_blur_p=1 --set 'motion_blur_range=[3,7]'
     --set motion_blur_p=1 --set 'gaussian_noise_range=[0,10]' --set gaussian_noise_p=1)
step 60 bench-data-augmented $FP bench data --device $DEV --data $DATA/shards --set num_joints=11 "${AUG[@]}" \
    --batch-size $BATCH --iters $ITERS --json "$OUT/data_augmented.json"

# 3. Issue 13's: ResNet-50 over a 640x480 H.264 clip, decoded on the GPU (NVDEC through DALI), batch 64.
step 90 bench-analyze $FP bench analyze --device $DEV --video $DATA/clip.mp4 --set net_type=resnet_50 \
    --set num_joints=11 --batch-size $([ "$DRY" = 1 ] && echo 4 || echo 64) --json "$OUT/analyze.json"

# 4. torchrun (NCCL on a GPU, gloo on the CPU): $FIRST iterations, then resumed to $LAST in deterministic mode.
RUN=/tmp/gpu_check_run
rm -rf $RUN
TRAIN=(--set dataset=$DATA/shards --set num_joints=11 --set net_type=resnet_18 --set out_dir=$RUN
       --set batch_size=8 --set save_iters=$FIRST --set deterministic=true --set "multi_step=[[0.001, $LAST]]")
step 90 torchrun $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m fastpose train configs/demo.yaml \
    "${TRAIN[@]}" --max-iters $FIRST
step 60 resume $FP train configs/demo.yaml "${TRAIN[@]}" --resume
# 5. `fastpose analyze` itself on the whole clip with a ResNet-50 snapshot (one training iteration: speed does not
#    depend on the weights): frames/s end to end, from its meta file.
R50=/tmp/gpu_check_r50
rm -rf $R50
step 60 r50-snapshot $FP train configs/demo.yaml "${TRAIN[@]}" --set out_dir=$R50 --set net_type=resnet_50 \
    --set save_iters=1 --max-iters 1
step 90 analyze $FP analyze $R50/snapshot-1.pt $DATA/clip.mp4 --out $R50/analyze --decoder \
    $([ "$DRY" = 1 ] && echo pyav || echo dali) --batch-size $([ "$DRY" = 1 ] && echo 4 || echo 64) --device $DEV
cp $R50/analyze/*_meta.json "$OUT/analyze_meta.json" 2>/dev/null
echo "=== steps (name rc seconds):"
cat /tmp/gpu_check_steps.txt
