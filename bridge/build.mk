# The shared library that Python loads through cffi: the core plus the
# batch helpers of the channel (bridge/aqm_chan_lib.c).
BRIDGE_LIB_SRCS := bridge/aqm_chan_lib.c
BRIDGE_LIB_OBJS := $(BRIDGE_LIB_SRCS:bridge/%.c=$(BUILD)/bridge/%.o)

$(BUILD)/bridge/%.o: bridge/%.c $(CORE_HDRS) | $(BUILD)
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) -fPIC $(CORE_INC) -c $< -o $@

$(BUILD)/libaqmcore.so: $(CORE_OBJS) $(BRIDGE_LIB_OBJS)
	$(CC) -shared -o $@ $^

ALL_TARGETS += $(BUILD)/libaqmcore.so

# The Linux data path host: the core over a POSIX shm region, real time.
HOST_CFLAGS := -std=c99 -Wall -Wextra -Werror
$(BUILD)/aqm-host: bridge/linux/aqm_host.c bridge/linux/aqm_lregion.h bridge/linux/aqm_lutil.h $(BUILD)/libaqmcore.a $(CORE_HDRS) | $(BUILD)
	$(CC) $(HOST_CFLAGS) $(CFLAGS) $(CORE_INC) $< $(BUILD)/libaqmcore.a -lm -lrt -o $@

ALL_TARGETS += $(BUILD)/aqm-host

# The Linux data path on real packets: the core between two TUN devices of a
# router namespace (bridge/aqm_bridge/netns.py sets the namespaces up).
$(BUILD)/aqm-fwd: bridge/linux/aqm_fwd.c bridge/linux/aqm_lregion.h bridge/linux/aqm_lutil.h $(BUILD)/libaqmcore.a $(CORE_HDRS) | $(BUILD)
	$(CC) $(HOST_CFLAGS) $(CFLAGS) $(CORE_INC) $< $(BUILD)/libaqmcore.a -lrt -o $@

ALL_TARGETS += $(BUILD)/aqm-fwd

# A UDP sender of ECT(1) that reacts to CE, its echo, and a latency probe.
$(BUILD)/aqm-udpflow: bridge/linux/aqm_udpflow.c bridge/linux/aqm_lutil.h | $(BUILD)
	$(CC) $(HOST_CFLAGS) $(CFLAGS) $< -lm -o $@

ALL_TARGETS += $(BUILD)/aqm-udpflow
