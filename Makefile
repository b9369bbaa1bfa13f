# sparkdl: `make demo` runs the main job, `make test` runs every test. Both set up
# .venv first (and the Scala jar with Maven), Horovod included (a second run only re-installs when pyproject.toml or
# the Horovod recipe changed; the Horovod wheel is cached in ~/.cache/sparkdl/wheels).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.sparkdl-installed
MVN    ?= mvn -q -B
JVM_SOURCES := $(shell find jvm/src -type f 2>/dev/null) jvm/pom.xml $(wildcard sparkdl/schemas/*.json)
JAR    := jvm/target/sparkdl-jvm_2.13-$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml).jar

.PHONY: setup demo test unit integration lint bench clean jvm jvm-test kafka-jars hdfs-jars

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

# A local Kafka broker's jars and Spark's Kafka connector, from Maven Central.
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
	$(PY) -m pytest sparkdl tests

unit: setup
	$(PY) -m pytest sparkdl tests/unit

integration: setup jvm kafka-jars hdfs-jars
	$(PY) -m pytest tests/integration

bench: setup jvm kafka-jars hdfs-jars
	$(PY) bench/run_all.py

clean:
	rm -rf out spark-warehouse .pytest_cache
