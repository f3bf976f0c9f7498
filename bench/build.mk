# Benchmarks: figures for bench/README.md, never part of `make test`.
$(BUILD)/aqm-core-bench: bench/core_bench.c $(BUILD)/libaqmcore.a $(CORE_HDRS) | $(BUILD)
	$(CC) -std=gnu99 -Wall -Wextra -Werror -O2 -g $(CORE_INC) $< $(BUILD)/libaqmcore.a -lpthread -o $@

.PHONY: bench
bench: $(BUILD)/aqm-core-bench
	$(BUILD)/aqm-core-bench
