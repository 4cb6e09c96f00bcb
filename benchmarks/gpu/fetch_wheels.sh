#!/usr/bin/env bash
# Download, on a machine with PyPI, the wheels that privdyn needs and the device machine's image
# lacks (it has torch, numpy, scipy, pandas, pyarrow, scikit-learn, matplotlib, typer, rich, pyyaml,
# safetensors, pytest, hypothesis; see the device tool's KINDS.md), for its Python 3.12 on x86-64.
# They land in .whl/ (ignored by git through .git/info/exclude); benchmarks/gpu/session.sh
# installs them there without a network. Versions: the ones this checkout's venv runs.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PKGS=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
      zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 plotly==7.1.0
      mnist1d==0.0.2.post1)
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${PKGS[@]}"
ls -1 .whl && du -sh .whl
