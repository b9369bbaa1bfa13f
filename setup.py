"""Build hook: a wheel of sparkdl carries the Scala jar in ``sparkdl/jars/``.

All metadata lives in ``pyproject.toml``; setuptools runs this file only for the
``build_py`` step below (``python -m build --wheel``, ``pip wheel .``, ``make dist``).

The jar (``sparkdl-jvm_2.13-<version>.jar``) is built by Maven from ``jvm/`` and
copied into the wheel's ``sparkdl/jars/``, where ``sparkdl.jvm.jar_path()`` looks
first. Editable installs (``pip install -e``, what ``make setup`` does) copy nothing
and never run Maven: ``sparkdl.jvm`` falls back to ``jvm/target`` in a source tree.

Environment:
    SPARKDL_MVN: the Maven command (default ``mvn -q -B``).
    SPARKDL_JAR: a prebuilt jar to bundle instead of building one (must carry this
        version's file name).

Example::

    make dist                                  # dist/sparkdl-0.1.0-py3-none-any.whl
    python -m build --wheel                    # the same, through PEP 517
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.errors import SetupError

ROOT = Path(__file__).resolve().parent
JVM = ROOT / "jvm"
SCALA_BINARY = "2.13"


def _newest_input_mtime() -> float:
    """Newest modification time among the files the jar is built from.

    ``jvm/pom.xml`` embeds ``sparkdl/schemas/*.json`` into the jar (a resource with
    ``targetPath`` ``sparkdl/schemas``), so the schemas count as inputs too.
    """
    inputs = [JVM / "pom.xml", *ROOT.glob("sparkdl/schemas/*.json")]
    inputs += (p for p in (JVM / "src").rglob("*") if p.is_file())
    return max(p.stat().st_mtime for p in inputs)


def _maven_jar(name: str) -> Path:
    """The jar in ``jvm/target``, rebuilt by Maven unless it is newer than its inputs.

    Reusing a fresh ``jvm/target`` jar keeps ``make test`` and CI fast: ``make jvm``
    (Maven with ScalaTest) has usually just built the very same bytes, and a Scala
    compile costs a minute or more. Anything older than a source, the POM or a schema
    is rebuilt, tests skipped (``make jvm-test`` runs them).
    """
    jar = JVM / "target" / name
    if jar.is_file() and jar.stat().st_mtime > _newest_input_mtime():
        return jar
    if not (JVM / "pom.xml").is_file():
        raise SetupError(f"Cannot bundle {name}: no jvm/pom.xml beside setup.py to build it "
                         "from. Build from a sparkdl source checkout, or set SPARKDL_JAR to a "
                         "prebuilt jar.")
    mvn = shlex.split(os.environ.get("SPARKDL_MVN", "mvn -q -B"))
    if shutil.which(mvn[0]) is None:
        raise SetupError(f"Building {name} needs Maven ({mvn[0]!r} is not on PATH): install "
                         "Maven 3.9+ and a JDK 17+, set SPARKDL_MVN to the Maven command, or "
                         "set SPARKDL_JAR to a prebuilt jar.")
    # maven.test.skip also skips compiling the ScalaTest suites: the wheel needs main only.
    cmd = [*mvn, "-f", str(JVM / "pom.xml"), "-Dmaven.test.skip=true", "package"]
    print("building the sparkdl JVM jar:", shlex.join(cmd), flush=True)
    try:
        subprocess.run(cmd, check=True, cwd=ROOT)
    except subprocess.CalledProcessError as e:
        raise SetupError(f"Maven failed (exit {e.returncode}) building {name}; its output is "
                         "above. `make jvm` in the source tree shows the same error.") from None
    if not jar.is_file():
        raise SetupError(f"Maven finished but {jar} is missing: does jvm/pom.xml's version "
                         "match pyproject.toml's?")
    return jar


class BuildPyWithJar(build_py):
    """``build_py`` that also puts the Scala jar into ``sparkdl/jars/`` of the build."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # the source tree's jvm/target serves editable installs
            return
        name = f"sparkdl-jvm_{SCALA_BINARY}-{self.distribution.get_version()}.jar"
        given = os.environ.get("SPARKDL_JAR")
        if given and Path(given).name != name:
            raise SetupError(f"SPARKDL_JAR={given} is not {name}: bundle the jar of this "
                             "version, or unset SPARKDL_JAR to build it with Maven.")
        jar = Path(given) if given else _maven_jar(name)
        dest = Path(self.build_lib) / "sparkdl" / "jars"
        dest.mkdir(parents=True, exist_ok=True)
        for stale in dest.glob("*.jar"):  # a jar of another version left in build/
            stale.unlink()
        self.copy_file(str(jar), str(dest / name))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if not self.editable_mode:
            name = f"sparkdl-jvm_{SCALA_BINARY}-{self.distribution.get_version()}.jar"
            outputs.append(str(Path(self.build_lib) / "sparkdl" / "jars" / name))
        return outputs


setup(cmdclass={"build_py": BuildPyWithJar})
