# AQM-LLM: build the C parts, set up Python, run the main job and the tests.
#
#   make            the core (static + shared), the Linux hosts, the bench
#   make setup      apt packages (as root) and .venv with the project
#   make run        set up, build, run the main job on the embedded default
#   make test       set up, build, run every test
#   make model      reproduce the shipped default model (models/recipe.toml)
#
# Each directory adds its own targets in a build.mk fragment.

CC	?= cc
CFLAGS	?= -O2 -g
WARN	:= -std=c99 -Wall -Wextra -Werror
BUILD	:= build
VENV	:= .venv
PY	:= $(VENV)/bin/python

ALL_TARGETS :=
TEST_TARGETS :=

.PHONY: all setup run run-ready test test-ready lint clean
.DEFAULT_GOAL := all

include kmod/core/build.mk
include bridge/build.mk
include kmod/freebsd/build.mk
-include bench/build.mk
-include tests/build.mk
-include daemon/build.mk
include sim/build.mk
include models/build.mk

all: $(ALL_TARGETS)

$(BUILD):
	mkdir -p $@

setup: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml scripts/setup.sh
	sh scripts/setup.sh

# After setup, a second make reads the fragments again with .venv present
# (the ns-3 runner is found through the installed ns3 wheel).
run: setup
	$(MAKE) run-ready

run-ready: all
	$(PY) -m aqmllmd.demo

PY_DIRS := $(wildcard bridge daemon models sim tests bench)

lint: setup
	$(VENV)/bin/ruff check $(PY_DIRS)

test: setup
	$(MAKE) test-ready

test-ready: all lint $(TEST_TARGETS)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(BUILD)
