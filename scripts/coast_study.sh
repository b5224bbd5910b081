#!/usr/bin/env bash
# Reproduces reports/coast/ and policies/vla_metaworld_mt6_weak/conceptors/coast_*:
# fit rollouts -> conceptor fits (paper + repo presets) -> preset comparison -> selection on select
# seeds (heuristic + grid) -> frozen selection -> paired test run with controls, diagnostics, overhead.
# ~5 min collect + ~5 min fit + ~20 min select + ~11 min test on 2 cores (deterministic: seeded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=egl HF_HUB_OFFLINE=1
L=.venv/bin/lstack
POLICY=policies/vla_metaworld_mt6_weak
WORK=${WORK:-data/coast}
mkdir -p "$WORK"
[ -f "$WORK/rollouts.safetensors" ] || $L steer collect --policy "$POLICY" \
  --sites expert.layer0,expert.layer1,expert.layer2,expert.layer3 --n 40 --keep tokens --out "$WORK/rollouts.safetensors"
for preset in paper repo; do
  $L steer fit --rollouts "$WORK/rollouts.safetensors" --preset $preset --alphas 0.1,0.5,1,2,10 --out "$WORK/conceptors"
done
$L steer presets --conceptors "$WORK/conceptors" --out reports/coast/presets.json
$L steer study --stage select --policy "$POLICY" --rollouts "$WORK/rollouts.safetensors" --conceptors "$WORK/conceptors" \
  --preset paper --out reports/coast
$L steer study --stage test --policy "$POLICY" --rollouts "$WORK/rollouts.safetensors" --conceptors "$WORK/conceptors" \
  --preset paper --out reports/coast --overhead-reps 600 --ship "$POLICY/conceptors"
