#!/usr/bin/env bash
# The device check (device_check.py) on a GPU machine that reaches no package registry.
#
# 1. Here, on a machine with pip and a registry, once: download the pure-Python
#    dependencies the GPU machine lacks as wheels into .whl/ (ignored by git), the
#    versions this checkout's .venv tested:
#        bash examples/benchmarks/device_check.sh wheels
# 2. There, in a copy of the tree that holds .whl/ (python3 with torch, torchvision,
#    pluggy, tqdm, safetensors, scikit-learn): install the carried wheels into
#    /tmp/twinfold-site, twinfold and its plugins from the tree without dependencies,
#    then run the check; extra arguments go to device_check.py. Output and JSON land in
#    $OUT when it is set, else in the current folder:
#        bash examples/benchmarks/device_check.sh run
set -euo pipefail
cd "$(dirname "$0")/../.."
# pydantic and what it needs (typing-extensions: pydantic wants a newer one than some
# images hold), lightning-fabric (the GPU image may bundle it only inside lightning),
# setuptools (twinfold's build backend, >= 77, for the editable installs)
WHEELS=(pydantic pydantic-core annotated-types typing-inspection typing-extensions
        lightning-fabric setuptools)
GPU_PYTHON=${GPU_PYTHON_VERSION:-3.12}
SITE=/tmp/twinfold-site

wheels() {
    local py=${PYTHON:-}
    if [ -z "$py" ]; then
        if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
    fi
    mkdir -p .whl
    for name in "${WHEELS[@]}"; do
        version=$("$py" -c "import importlib.metadata as m; print(m.version('$name'))")
        "$py" -m pip download --quiet --no-deps --only-binary=:all: --dest .whl \
            --python-version "$GPU_PYTHON" --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            "$name==$version"
    done
    ls .whl
}

run() {
    local py=${PYTHON:-python3} out=${OUT:-.}
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" .whl/*.whl
        export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
    fi
    local editable=(-e core)
    for plugin in plugins/*/; do
        editable+=(-e "$plugin")
    done
    "$py" -m pip install -q --no-index --no-deps --no-build-isolation "${editable[@]}"
    "$py" -c "import pydantic, lightning_fabric, twinfold_byol, twinfold; print('twinfold', twinfold.__version__, 'pydantic', pydantic.VERSION)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    # the check keeps to its own budget (--budget-s, 7.5 min); timeout is the backstop
    PYTHONUNBUFFERED=1 timeout 540 "$py" examples/benchmarks/device_check.py \
        --json "$out/device_check.json" "$@" 2>&1 | tee "$out/device_check.log"
}

case "${1:-}" in
    wheels) wheels ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 wheels | run [device_check.py options]" >&2; exit 2 ;;
esac
