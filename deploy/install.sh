#!/usr/bin/env bash
# Install sparkdl from its wheel into a new virtualenv, Horovod included, and check it.
#
#   deploy/install.sh TARGET WHEEL [--no-horovod]
#
#   TARGET  the virtualenv to create (e.g. /opt/sparkdl); executors then run
#           TARGET/bin/python (spark.pyspark.python / PYSPARK_PYTHON)
#   WHEEL   sparkdl's wheel (`make dist` builds dist/sparkdl-<version>-py3-none-any.whl;
#           it carries the Scala jar)
#
# Environment:
#   PYTHON            the interpreter the virtualenv is made from (default: python3)
#   PIP_INSTALL_OPTS  extra options for installing the wheel, e.g. an offline install from
#                     a wheelhouse: "--no-index --find-links /wheels"
#
# The Kubernetes image (deploy/kubernetes/Dockerfile) is built with this script, and
# tests/integration/test_install_script.py runs it in a clean directory. Horovod comes
# from deploy/horovod/build.sh (a patched build, cached in ~/.cache/sparkdl/wheels), so
# this script must run from a sparkdl source tree or a copy of its deploy/ folder.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
usage() { echo "usage: $0 TARGET WHEEL [--no-horovod]" >&2; exit 2; }
[ $# -ge 2 ] || usage
target="$1"; wheel="$2"; horovod=1
[ "${3:-}" = "--no-horovod" ] && horovod=0
[ $# -le 3 ] || usage
[ -f "$wheel" ] || { echo "install.sh: no wheel at $wheel (build it with \`make dist\`)" >&2; exit 2; }
[ ! -e "$target/bin/python" ] || { echo "install.sh: $target already holds an environment" >&2; exit 2; }

"${PYTHON:-python3}" -m venv "$target"
py="$target/bin/python"
# shellcheck disable=SC2086 # PIP_INSTALL_OPTS is a list of options
"$py" -m pip install -q ${PIP_INSTALL_OPTS:-} "$wheel"
if [ "$horovod" = 1 ]; then
  "$here/horovod/build.sh" "$py"
fi

# Fail here, not in the first fit: everything the executors' worker imports, and the jar.
"$py" - "$horovod" <<'PY'
import sys
import sparkdl, torch, pyarrow, pyspark
from sparkdl.jvm import jar_path
if sys.argv[1] == "1":
    import horovod.torch  # noqa: F401
print(f"sparkdl {sparkdl.__version__} installed in "
      f"{sys.prefix}: torch {torch.__version__}, pyspark {pyspark.__version__}, jar {jar_path()}")
PY
