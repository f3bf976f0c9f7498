# CI cannot load a FreeBSD module: it cross-compiles the module's C files for
# a FreeBSD 14 amd64 kernel against real FreeBSD 14 headers (the ziglang
# wheel's), and drives the glue in a user-space harness (tests/freebsd).
FREEBSD_CC     := $(PY) -m ziglang cc -target x86_64-freebsd.14.0-none
FREEBSD_KFLAGS := -D_KERNEL -DKLD_MODULE -std=gnu99 -O2 -Wall -Wextra -Werror \
                  -Wno-unused-parameter -fno-sanitize=undefined -ffreestanding \
                  -fno-builtin -fno-common -mno-red-zone -mcmodel=kernel \
                  -mno-mmx -mno-sse -msoft-float
FREEBSD_INC    := -Ikmod/core -Ibridge -Ikmod/freebsd
FREEBSD_SRCS   := kmod/freebsd/aqm_llm.c kmod/core/aqm_core.c

.PHONY: freebsd-check
freebsd-check: setup
	@mkdir -p $(BUILD)/freebsd
	@for f in $(FREEBSD_SRCS); do \
		echo "freebsd-check: $$f"; \
		$(FREEBSD_CC) $(FREEBSD_KFLAGS) $(FREEBSD_INC) -c $$f \
			-o $(BUILD)/freebsd/$$(basename $$f .c).o || exit 1; \
	done

TEST_TARGETS += freebsd-check

# The user-space harness: the module's glue and the real core under ASan+UBSan.
$(BUILD)/freebsd/harness: tests/freebsd/harness.c tests/freebsd/shim.c \
    tests/freebsd/shim.h kmod/freebsd/aqm_llm.c kmod/freebsd/aqm_llm_ioctl.h \
    kmod/freebsd/aqm_llm_os.h \
    kmod/freebsd/compat/aqm_dn_compat.h $(CORE_SRCS) $(CORE_HDRS)
	@mkdir -p $(dir $@)
	$(CC) -std=gnu99 -g -O1 -Wall -Wextra -Werror -Wno-unused-parameter \
		-fsanitize=address,undefined -fno-sanitize-recover=undefined \
		-DAQM_LLM_HARNESS -Itests/freebsd/shim -Itests/freebsd \
		-Ikmod/freebsd -Ikmod/freebsd/compat $(CORE_INC) \
		tests/freebsd/harness.c tests/freebsd/shim.c $(CORE_SRCS) -o $@ \
		-lpthread

ALL_TARGETS += $(BUILD)/freebsd/harness
