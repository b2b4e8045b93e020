#!/usr/bin/env bash
# Multi-node pretraining on SLURM: one launcher per node, accelerate wires up the ranks.
#   sbatch training/accelerate/slurm_multinode.sh training/configs/plm_300m.yaml
#   ACCELERATE_CONFIG=training/accelerate/ddp.yaml sbatch training/accelerate/slurm_multinode.sh CONFIG.yaml
# ACCELERATE_CONFIG picks the engine (fsdp2.yaml by default; ddp.yaml, deepspeed_zero2.yaml, deepspeed_zero3.yaml):
# the trainer runs the one it names, or stops with an error when it cannot engage (modeling_plm/training/distributed.py).
#SBATCH --job-name=plm-pretrain
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --signal=TERM@300          # SIGTERM 5 min before the limit: the trainer saves a checkpoint and exits
#SBATCH --output=%x-%j.out
set -euo pipefail
CONFIG=${1:?usage: sbatch slurm_multinode.sh RUN_CONFIG.yaml [--flags ...]}
shift
MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
GPUS_PER_NODE=8
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-training/accelerate/fsdp2.yaml}
srun --kill-on-bad-exit=1 bash -c "accelerate launch \
  --config_file $ACCELERATE_CONFIG \
  --num_machines $SLURM_NNODES --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
  --machine_rank \$SLURM_NODEID --main_process_ip $MAIN_ADDR --main_process_port 29500 \
  training/pretrain.py $CONFIG --resume auto $*"
