# ctxvm — the one entry point.
#   make            build build/ctxvm
#   make run        install what is missing, build, run the examples
#   make check      install what is missing, build, run every suite on the host and
#                   in the test VM; ends "N passed, N failed" summed over both
#   make asan-check the same suites against an ASan+UBSan build
#   make fuzz       libFuzzer on the assembler and the broker core (FUZZ_SECONDS each, default 60)
#   make bench      speed, side by side with native C and the OS floor, in one run;
#                   then kmod vs user broker inside the test VM (vm-bench)
#   make lint       cppcheck on userspace and shared; the module with W=1 and sparse,
#                   warnings fatal; checkpatch --strict on kmod/ and shared/
#   make module     build ctxvm.ko (Kbuild) against Debian's 6.1 headers (W=1, sparse)
#   make vm-test    boot the test VM (qemu TCG): module, kselftests, conformance and
#                   hostile programs on --backend kmod, random ioctl tester, rmmod
#   make install    PREFIX=/usr/local DESTDIR=
#   make clean

CC       ?= gcc
PREFIX   ?= /usr/local
BUILD    ?= build
FUZZ_SECONDS ?= 60

KSFT_DIR  := $(BUILD)/kernel-src/linux-source-6.1/tools/testing/selftests
KSRC_TAR  := /usr/src/linux-source-6.1.tar.xz

WARN     := -Wall -Wextra -Werror
CSTD     := -std=c11 -D_GNU_SOURCE
INCLUDES := -Ishared -Iuserspace
OPT      ?= -O2 -g
# -z now: symbols are bound once in the runner, not again by every context
# process (lazy binding wrote the GOT and walked symbol tables in each).
LIBS     := $(shell pkg-config --libs libsodium 2>/dev/null || echo -lsodium) -lseccomp -lcap \
	    -Wl,-z,now
# The runner is linked statically: a context process is a fork of the fork
# server, and a static image (no ld.so, one mapping per segment, no GOT to
# copy) forks and exits ~70 us faster than the dynamic one (make bench).
RUNNER_LINK := -static
CFLAGS_ALL = $(CSTD) $(OPT) $(WARN) $(INCLUDES) -MMD -MP $(EXTRA_CFLAGS)
# The 6.1 kselftest harness has unused parameters in its own macros.
TEST_CFLAGS = $(CFLAGS_ALL) -Wno-unused-parameter -I$(KSFT_DIR)

SRCS      := $(wildcard userspace/*.c) shared/broker.c
LIB_SRCS  := $(filter-out userspace/main.c,$(SRCS))
# tests/kmod_* need ctxvm.ko loaded: they run inside the test VM (vm-test).
TEST_SRCS := $(filter-out tests/kmod_%,$(wildcard tests/*_test.c))

# Three builds of the same sources: release, test (-DCTXVM_TESTING switches),
# and ASan+UBSan of the test build.
define objs
$(patsubst %.c,$(1)/obj/%.o,$(2))
endef

REL  := $(BUILD)
TST  := $(BUILD)/test
ASAN := $(BUILD)/asan

.PHONY: all run check asan-check fuzz bench lint install clean deps deps-fuzz \
	headers tests coverage module vm-test vm-bench deps-vm module-clean
all: $(REL)/ctxvm

# ---- objects -------------------------------------------------------------
$(REL)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(TST)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -DCTXVM_TESTING -c $< -o $@

$(ASAN)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -DCTXVM_TESTING -O1 -fsanitize=address,undefined \
		-fno-omit-frame-pointer -fno-sanitize-recover=all -c $< -o $@

# ---- libraries and binaries ------------------------------------------------
$(REL)/libctxvm.a: $(call objs,$(REL),$(LIB_SRCS))
	@rm -f $@
	ar rcs $@ $^
$(TST)/libctxvm.a: $(call objs,$(TST),$(LIB_SRCS))
	@rm -f $@
	ar rcs $@ $^
$(ASAN)/libctxvm.a: $(call objs,$(ASAN),$(LIB_SRCS))
	@rm -f $@
	ar rcs $@ $^

$(REL)/ctxvm: $(REL)/obj/userspace/main.o $(REL)/libctxvm.a
	$(CC) $(RUNNER_LINK) $^ $(LIBS) -o $@
$(TST)/ctxvm: $(TST)/obj/userspace/main.o $(TST)/libctxvm.a
	$(CC) $(RUNNER_LINK) $^ $(LIBS) -o $@
$(ASAN)/ctxvm: $(ASAN)/obj/userspace/main.o $(ASAN)/libctxvm.a
	$(CC) -fsanitize=address,undefined $^ $(LIBS) -o $@

# ---- kselftest headers, from Debian's linux-source-6.1 (never committed) --
$(KSFT_DIR)/kselftest_harness.h:
	@test -f $(KSRC_TAR) || { echo "missing $(KSRC_TAR): run tools/install-deps.sh (apt-get install linux-source-6.1)"; exit 1; }
	@mkdir -p $(BUILD)/kernel-src
	tar -xJf $(KSRC_TAR) -C $(BUILD)/kernel-src \
		linux-source-6.1/tools/testing/selftests/kselftest.h \
		linux-source-6.1/tools/testing/selftests/kselftest_harness.h \
		linux-source-6.1/scripts/checkpatch.pl \
		linux-source-6.1/scripts/spelling.txt \
		linux-source-6.1/scripts/const_structs.checkpatch
	@touch $@
headers: $(KSFT_DIR)/kselftest_harness.h

# ---- test binaries (every tests/*_test.c, linked with the test build) ------
# The enforcement suites need the real sandbox, which the ASan build cannot
# have (see userspace/sandbox.c): they run in `check` only.
ENFORCEMENT    := tests/sandbox_test.c tests/isolation_test.c
TEST_BINS      := $(patsubst tests/%.c,$(TST)/tests/%,$(TEST_SRCS))
ASAN_TEST_BINS := $(patsubst tests/%.c,$(ASAN)/tests/%,$(filter-out $(ENFORCEMENT),$(TEST_SRCS)))

$(TST)/tests/%: tests/%.c $(TST)/libctxvm.a $(KSFT_DIR)/kselftest_harness.h
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) -DCTXVM_TESTING $< $(TST)/libctxvm.a $(LIBS) -o $@
$(ASAN)/tests/%: tests/%.c $(ASAN)/libctxvm.a $(KSFT_DIR)/kselftest_harness.h
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) -DCTXVM_TESTING -O1 -fsanitize=address,undefined \
		-fno-omit-frame-pointer -fno-sanitize-recover=all $< $(ASAN)/libctxvm.a $(LIBS) -o $@

tests: $(REL)/ctxvm $(TST)/ctxvm $(TEST_BINS)

# ---- entry points ------------------------------------------------------------
deps:
	@tools/install-deps.sh base
deps-fuzz:
	@tools/install-deps.sh fuzz

run: deps
	@$(MAKE) --no-print-directory all
	@tools/run-examples.sh

# The host suites, then the test VM; tools/check.sh sums both into one line.
check: deps deps-vm
	@$(MAKE) --no-print-directory tests
	@BUILD=$(BUILD) tools/check.sh "$(MAKE) --no-print-directory vm-test" \
		env CTXVM=$(REL)/ctxvm CTXVM_TEST=$(TST)/ctxvm tools/run-tests.sh $(TEST_BINS)

asan-check: deps
	@$(MAKE) --no-print-directory $(ASAN)/ctxvm $(ASAN_TEST_BINS)
	@CTXVM=$(ASAN)/ctxvm CTXVM_TEST=$(ASAN)/ctxvm \
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		tools/run-tests.sh $(ASAN_TEST_BINS)

FUZZ_CFLAGS := $(CSTD) -g -O1 $(INCLUDES) -fsanitize=fuzzer,address,undefined
FUZZ_SRCS := $(filter-out userspace/main.c,$(SRCS))
$(BUILD)/fuzz/asm_fuzz: tests/fuzz/asm_fuzz.c $(FUZZ_SRCS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $^ $(LIBS) -o $@
$(BUILD)/fuzz/broker_fuzz: tests/fuzz/broker_fuzz.c shared/broker.c shared/broker.h
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) tests/fuzz/broker_fuzz.c shared/broker.c -o $@
# Each target runs FUZZ_SECONDS: the assembler (seeded with every MASM file
# here) and the broker core (random operation sequences, invariants checked).
fuzz: deps-fuzz
	@$(MAKE) --no-print-directory $(BUILD)/fuzz/asm_fuzz $(BUILD)/fuzz/broker_fuzz
	@mkdir -p $(BUILD)/fuzz/corpus $(BUILD)/fuzz/broker-corpus
	@find tests/conformance examples -name '*.masm' -exec cp {} $(BUILD)/fuzz/corpus/ \;
	$(BUILD)/fuzz/asm_fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
		-artifact_prefix=$(BUILD)/fuzz/ $(BUILD)/fuzz/corpus
	$(BUILD)/fuzz/broker_fuzz -max_total_time=$(FUZZ_SECONDS) \
		-artifact_prefix=$(BUILD)/fuzz/broker- $(BUILD)/fuzz/broker-corpus

# The floor is linked as the runner is (a fork of a like image), and once
# dynamically, as a C program usually is.
$(BUILD)/bench/floor: tests/bench/floor.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) -O2 $(WARN) $(RUNNER_LINK) $< -o $@
$(BUILD)/bench/floor-dynamic: tests/bench/floor.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) -O2 $(WARN) $< -o $@
$(BUILD)/bench/fib_native: tests/bench/fib_native.c shared/field.h
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) -O2 $(WARN) $(INCLUDES) $< -o $@
bench: deps all $(BUILD)/bench/floor $(BUILD)/bench/floor-dynamic $(BUILD)/bench/fib_native
	@tools/bench.sh
	@$(MAKE) --no-print-directory vm-bench

# Branch coverage of the broker core by its unit suite (gcov).
coverage: $(KSFT_DIR)/kselftest_harness.h
	@rm -rf $(BUILD)/coverage && mkdir -p $(BUILD)/coverage
	$(CC) $(TEST_CFLAGS) -O0 --coverage -DCTXVM_COVERAGE tests/broker_test.c shared/broker.c \
		-o $(BUILD)/coverage/broker_test
	@cd $(BUILD)/coverage && ./broker_test >/dev/null
	@gcov -b -o $(BUILD)/coverage $(BUILD)/coverage/broker_test-broker.gcno 2>/dev/null | \
		sed -n "/File 'shared\/broker.c'/,/^$$/p"
	@mv -f broker.c.gcov $(BUILD)/coverage/ 2>/dev/null; rm -f *.gcov
	@echo "annotated source: $(BUILD)/coverage/broker.c.gcov"

lint:
	@command -v cppcheck >/dev/null || tools/install-deps.sh lint
	cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,portability \
		--inline-suppr -D__GNUC__ -Ishared -Iuserspace userspace shared
	@$(MAKE) --no-print-directory headers
	perl $(KSRC)/scripts/checkpatch.pl --strict --no-tree --quiet -f kmod/*.c \
		shared/broker.c shared/broker.h shared/ctxvm_uapi.h
	@# compat.h's userspace half maps libc's names; that is its job
	perl $(KSRC)/scripts/checkpatch.pl --strict --no-tree --quiet \
		--ignore PREFER_KERNEL_TYPES -f shared/compat.h
	@$(MAKE) --no-print-directory module-clean >/dev/null
	@$(MAKE) --no-print-directory module 2>&1 | tee $(BUILD)/module-lint.log
	@! grep -E 'warning:|error:' $(BUILD)/module-lint.log || \
		{ echo "lint: the module build (W=1, sparse) is not clean"; exit 1; }

# ---- kernel module (Kbuild at the top; the host kernel cannot load it) -----
KSRC    := $(BUILD)/kernel-src/linux-source-6.1
KDIR    ?= $(lastword $(sort $(wildcard /lib/modules/6.1.0-*-amd64/build)))
module:
	@tools/install-deps.sh module
	$(MAKE) -C $(or $(KDIR),$(lastword $(sort $(wildcard /lib/modules/6.1.0-*-amd64/build)))) \
		M=$(CURDIR) W=1 C=1 modules

module-clean:
	$(MAKE) -C $(or $(KDIR),$(lastword $(sort $(wildcard /lib/modules/6.1.0-*-amd64/build)))) \
		M=$(CURDIR) clean

# ---- the test VM (tools/vm/): Debian's kernel, busybox, qemu under TCG --------
VM          := $(BUILD)/vm
VM_TIMEOUT  ?= 1200
VM_FUZZ_SECONDS ?= 120
VM_STATIC   := $(VM)/static/kmod_abi_test $(VM)/static/kmod_fuzz
deps-vm:
	@tools/install-deps.sh vm
$(VM)/static/kmod_abi_test: tests/kmod_abi_test.c tests/protocol.h userspace/ctxclient.c userspace/ctxclient.h \
		shared/ctxvm_uapi.h shared/broker.h $(KSFT_DIR)/kselftest_harness.h
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) -O2 $(WARN) -Wno-unused-parameter -I$(KSFT_DIR) -static $< userspace/ctxclient.c -o $@
$(VM)/static/kmod_fuzz: tests/kmod_fuzz.c shared/ctxvm_uapi.h shared/broker.h
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) -O2 $(WARN) -Ishared -static $< -o $@
$(VM)/static/kmod_rt: tests/bench/kmod_rt.c shared/ctxvm_uapi.h shared/broker.h
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) -O2 $(WARN) -static $< -o $@

vm-test: deps-vm
	@$(MAKE) --no-print-directory module tests $(VM_STATIC) >$(BUILD)/vm-build.log 2>&1 || \
		{ cat $(BUILD)/vm-build.log; exit 1; }
	@BUILD=$(BUILD) VM_FUZZ_SECONDS=$(VM_FUZZ_SECONDS) tools/vm/stage.sh $(VM)/root-check check $(VM)/static
	@VM_KERNEL_DIR=$(VM)/kernel tools/vm/build-initramfs.sh $(VM)/check ctxvm.ko $(VM)/root-check >/dev/null
	@tools/vm/run.sh $(VM)/check $(VM_TIMEOUT)

vm-bench: deps-vm
	@$(MAKE) --no-print-directory module all $(VM)/static/kmod_rt >$(BUILD)/vm-build.log 2>&1 || \
		{ cat $(BUILD)/vm-build.log; exit 1; }
	@BUILD=$(BUILD) tools/vm/stage.sh $(VM)/root-bench bench $(VM)/static
	@VM_KERNEL_DIR=$(VM)/kernel tools/vm/build-initramfs.sh $(VM)/bench ctxvm.ko $(VM)/root-bench >/dev/null
	@echo "== inside the test VM (qemu TCG; only ratios mean anything)"
	@# no slub_debug here: it would time the allocator's checks
	@VM_APPEND= tools/vm/run.sh $(VM)/bench 600 | grep -E '^CTXVM-BENCH|^not ok|vm-test:' | sed 's/^CTXVM-BENCH: //'

install: $(REL)/ctxvm
	install -D -m 0755 $(REL)/ctxvm $(DESTDIR)$(PREFIX)/bin/ctxvm

clean:
	rm -rf $(BUILD)
	rm -f kmod/*.o kmod/.*.cmd .*.cmd *.ko *.mod *.mod.c *.mod.o ctxvm.o \
		modules.order Module.symvers

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
