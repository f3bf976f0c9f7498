# The portable core: a static library for C hosts, a shared one for Python.
CORE_SRCS := kmod/core/aqm_core.c
CORE_HDRS := kmod/core/aqm_core.h bridge/aqm_channel.h
CORE_INC  := -Ikmod/core -Ibridge

$(BUILD)/core/%.o: kmod/core/%.c $(CORE_HDRS) | $(BUILD)
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) -fPIC $(CORE_INC) -c $< -o $@

$(BUILD)/libaqmcore.a: $(CORE_SRCS:kmod/core/%.c=$(BUILD)/core/%.o)
	$(AR) rcs $@ $^

CORE_OBJS := $(CORE_SRCS:kmod/core/%.c=$(BUILD)/core/%.o)

ALL_TARGETS += $(BUILD)/libaqmcore.a
