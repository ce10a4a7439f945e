#!/usr/bin/env bash
# The closing note's CLI runs: one per library, the GPT-2-under-inductor case, HF's own gradient checkpointing vs no AC,
# and the issue-31 ResNet-18 (training mode) and T5 cases before (main) and after (branch user).
cd /work/wt/user
export HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=
OUT=/work/wt/user-screens
M=harness/rows/real_models.py
run() {  # name, then the check arguments
  local name=$1; shift
  { echo "\$ ac-conformance check $*"; timeout 1500 .venv/bin/ac-conformance check "$@" --report $OUT/$name; echo "[exit $?]"; } \
    2>&1 | grep -v "Warning\|warnings.warn\|cls.__new__\|W1207\|_internal.py\|^\s*$\|bos_token_id\|eos_token_id" > $OUT/$name.txt
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --screenshot=$OUT/$name.png --window-size=1400,2000 file://$OUT/$name/report.html >/dev/null 2>&1
}
before() {  # the same on main's harness (PYTHONPATH ahead of the editable install)
  local name=$1; shift
  { echo "\$ (main) python -m harness check $*"; (cd /work/main && PYTHONPATH=/work/main timeout 1500 /work/wt/user/.venv/bin/python -m harness check "$@" --report $OUT/$name); echo "[exit $?]"; } \
    2>&1 | grep -v "Warning\|warnings.warn\|cls.__new__\|W1207\|_internal.py\|^\s*$\|bos_token_id\|eos_token_id" > $OUT/$name.txt
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --screenshot=$OUT/$name.png --window-size=1400,2000 file://$OUT/$name/report.html >/dev/null 2>&1
}
W=/work/wt/user/$M
case "${1:-all}" in
  hf|all) run hf_gpt2 $M:hf_gpt2 --policy full --policy selective_op --backend aot_eager --backend inductor ;;&
  own|all) run hf_gpt2_own $M:hf_gpt2_gc --policy own ;;&
  titan|all) run torchtitan $M:torchtitan_llama3 --policy torchtitan_full --policy torchtitan_selective --policy every_other_mm ;;&
  timm|all) run timm $M:timm_vit --policy timm --policy full ;;&
  t5|all) before t5_before /work/wt/user-screens/t5_positional.py:build --policy full
          run t5_after /work/wt/user-screens/t5_positional.py:build --policy full ;;&
  resnet|all) before resnet_before $W:resnet18 --policy full --backend aot_eager --backend inductor
              run resnet_after $M:resnet18 --policy full --backend aot_eager --backend inductor ;;
esac
