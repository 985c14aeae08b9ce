# Entry points. `make demo` and `make test` work on a fresh Debian 12 machine as root:
# they install what is missing, configure, build, then run.
BUILD ?= build
JOBS  ?= $(shell nproc)
CMAKE_ARGS ?=
GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo "-G Ninja")

.PHONY: all deps configure build demo test test-unit test-reference test-e2e test-mpi test-gpu clean

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	@test -f $(BUILD)/CMakeCache.txt || cmake -S . -B $(BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	bash scripts/demo.sh $(BUILD)

# ctest, then the skip guard (scripts/check-no-skips.py): a test reported Skipped outside
# the gpu label fails the target, as a failure would. $(1): extra ctest arguments.
ctest_guarded = cd $(BUILD) && rm -f ctest-junit.xml && \
  { ctest --output-on-failure --output-junit ctest-junit.xml $(1); rc=$$?; \
    python3 $(CURDIR)/scripts/check-no-skips.py . || rc=1; exit $$rc; }

test: build
	$(call ctest_guarded,-j $(JOBS) --timeout 900)

test-unit: build
	$(call ctest_guarded,-j $(JOBS) -L unit)

test-reference: build
	$(call ctest_guarded,-j $(JOBS) -L reference)

test-e2e: build
	$(call ctest_guarded,-j $(JOBS) -L e2e)

test-mpi: build
	$(call ctest_guarded,-L mpi)

test-gpu: build
	cd $(BUILD) && ctest --output-on-failure -L gpu

clean:
	rm -rf $(BUILD)
