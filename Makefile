# sparkdl: `make demo` runs the main job, `make test` runs every test. Both set up
# .venv first (and the Scala jar with Maven), Horovod included (a second run only re-installs when pyproject.toml or
# the Horovod recipe changed; the Horovod wheel is cached in ~/.cache/sparkdl/wheels).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.sparkdl-installed
MVN    ?= mvn -q -B
JVM_SOURCES := $(shell find jvm/src -type f 2>/dev/null) jvm/pom.xml $(wildcard sparkdl/schemas/*.json)
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
JAR    := jvm/target/sparkdl-jvm_2.13-$(VERSION).jar
WHEEL  := dist/sparkdl-$(VERSION)-py3-none-any.whl
ENV_ARCHIVE ?= dist/sparkdl-env.tar

.PHONY: setup demo test test-yarn unit integration lint bench clean jvm jvm-test kafka-jars hdfs-jars \
        dist env-archive

setup: $(STAMP)

$(STAMP): pyproject.toml deploy/horovod/build.sh $(wildcard deploy/horovod/*.patch)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	deploy/horovod/build.sh $(PY)   # cached wheel: seconds; first build: ~10 minutes
	touch $@

demo: setup
	$(PY) python/train_digits.py --output out/digits

# The Scala half: compile, ScalaTest, package (Maven's local repository caches deps).
jvm: $(JAR)

$(JAR): $(JVM_SOURCES)
	$(MVN) -f jvm/pom.xml package

jvm-test:
	$(MVN) -f jvm/pom.xml package

# The wheel, carrying the Scala jar (setup.py: reused from jvm/target when it is newer than
# its sources, else built by Maven). No build isolation: the .venv's setuptools, no network.
dist: setup
	rm -rf build $(WHEEL)   # build/lib would keep modules deleted since the last build
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist .
	@echo "built $(WHEEL)"

# A relocatable environment (sparkdl from the wheel, torch, pyspark, pyarrow, Horovod) for
# spark.archives=$(ENV_ARCHIVE)#environment, spark.pyspark.python=./environment/bin/python.
# Cached in ~/.cache/sparkdl/env by the wheel's hash and the packed versions; first build
# about a minute or two (copies .venv's installed files, packs ~7 GB uncompressed).
env-archive: dist
	$(PY) -m sparkdl.pack_env --wheel $(WHEEL) --output $(ENV_ARCHIVE)

# A local Kafka broker's jars (deploy/local/kafka/target/broker), and Spark's Kafka
# connector with its dependencies in ~/.m2, where spark.jars.packages finds it offline.
KAFKA_STAMP := deploy/local/kafka/target/.resolved
kafka-jars: $(KAFKA_STAMP)

$(KAFKA_STAMP): deploy/local/kafka/pom.xml
	$(MVN) -f deploy/local/kafka/pom.xml package
	touch $@

# A local HDFS (MiniDFSCluster) for the tests and deploy/local/servers.py.
HDFS_STAMP := deploy/local/hdfs/target/.resolved
hdfs-jars: $(HDFS_STAMP)

$(HDFS_STAMP): deploy/local/hdfs/pom.xml
	$(MVN) -f deploy/local/hdfs/pom.xml package
	touch $@

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint jvm-test kafka-jars hdfs-jars
	$(PY) -m pytest --durations=25 sparkdl tests

# Spark on a real YARN (ResourceManager + NodeManager on a MiniHDFS), the packed ~6 GiB
# environment shipped by --archives: 15-20 minutes, so not part of `make test`.
test-yarn: setup jvm hdfs-jars
	SPARKDL_TEST_YARN=1 $(PY) -m pytest tests/integration/test_yarn.py

unit: setup
	$(PY) -m pytest sparkdl tests/unit

integration: setup jvm kafka-jars hdfs-jars
	$(PY) -m pytest tests/integration

bench: setup jvm kafka-jars hdfs-jars
	$(PY) bench/run_all.py

clean:
	rm -rf out spark-warehouse .pytest_cache build dist
