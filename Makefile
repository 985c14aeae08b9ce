# Entry points. `make demo` and `make test` work on a fresh Debian 12 machine as root:
# they install what is missing, configure, build, then run.
BUILD ?= build
JOBS  ?= $(shell nproc)
CMAKE_ARGS ?=
GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo "-G Ninja")

.PHONY: all deps configure build demo test test-unit test-reference test-e2e test-mpi test-gpu \
  configure-asan test-fuzz test-asan test-asan-unit clean

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
# the gpu label fails the target, as a failure would. $(1): extra ctest arguments;
# ctest_guarded_in takes the build directory first.
ctest_guarded_in = cd $(1) && rm -f ctest-junit.xml && \
  { ctest --output-on-failure --output-junit ctest-junit.xml $(2); rc=$$?; \
    python3 $(CURDIR)/scripts/check-no-skips.py . || rc=1; exit $$rc; }
ctest_guarded = $(call ctest_guarded_in,$(BUILD),$(1))

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

# The asan preset (clang, ASan + UBSan, libFuzzer targets, CPU only) in $(ASAN_BUILD); it
# shares the main build's reference Python. docs/reliability.md says what each finds.
ASAN_BUILD ?= build-asan
SANITIZER_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitizers/lsan.supp:print_suppressions=0

configure-asan: configure
	@test -f $(ASAN_BUILD)/CMakeCache.txt || cmake --preset asan -B $(ASAN_BUILD) $(GENERATOR) \
	  -DTEMPER_PYTHON=$(CURDIR)/$(BUILD)/pyenv/bin/python3 $(CMAKE_ARGS)

# Every fuzz target for its fixed number of executions (the ctest label fuzz).
test-fuzz: configure-asan
	cmake --build $(ASAN_BUILD) -j $(JOBS) --target temper_fuzz_targets
	cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS) -L fuzz

# The unit label alone under ASan + UBSan + LeakSanitizer (what CI runs of test-asan).
test-asan-unit: configure-asan
	cmake --build $(ASAN_BUILD) -j $(JOBS) --target temper_unit_tests
	export $(SANITIZER_ENV); $(call ctest_guarded_in,$(ASAN_BUILD),-j $(JOBS) --timeout 900 -L unit)

# The unit, mpi and e2e labels under ASan + UBSan: any report fails its test. Leak checking
# is on for unit and e2e; the mpi label runs without it, since Open MPI's components leak
# from their initialisation in code LeakSanitizer cannot name (docs/reliability.md).
test-asan: configure-asan
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	export $(SANITIZER_ENV); $(call ctest_guarded_in,$(ASAN_BUILD),-j $(JOBS) --timeout 900 -L "unit|e2e")
	export $(SANITIZER_ENV) ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1; \
	  $(call ctest_guarded_in,$(ASAN_BUILD),-j $(JOBS) --timeout 900 -L mpi)

clean:
	rm -rf $(BUILD)
