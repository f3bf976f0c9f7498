# The ns-3 scenario runner, built against the `ns3` wheel (the sim extra)
# found through the installed package; skipped when it is not installed.
NS3_DIR := $(shell $(PY) -c "import importlib.util as u, os; s = u.find_spec('ns3'); print(os.path.dirname(s.origin) if s and s.origin else (list(s.submodule_search_locations)[0] if s else ''))" 2>/dev/null)
NS3_LIBS := core network internet traffic-control point-to-point applications

ifneq ($(NS3_DIR),)
$(BUILD)/aqm-sim: sim/ns3/aqm-sim.cc sim/ns3/aqm-llm-queue-disc.cc \
    sim/ns3/aqm-llm-queue-disc.h sim/ns3/behaviour-policy.cc sim/ns3/behaviour-policy.h $(BUILD)/libaqmcore.a $(CORE_HDRS) | $(BUILD)
	$(CXX) -std=c++20 -O2 -Wall -Wextra -Werror -Wno-unused-parameter \
		-I$(NS3_DIR)/include $(CORE_INC) -Isim/ns3 \
		sim/ns3/aqm-sim.cc sim/ns3/aqm-llm-queue-disc.cc sim/ns3/behaviour-policy.cc \
		$(BUILD)/libaqmcore.a \
		-L$(NS3_DIR)/lib64 -Wl,--no-as-needed -Wl,-rpath,$(NS3_DIR)/lib64 \
		$(NS3_LIBS:%=-lns3.44-%) -o $@

ALL_TARGETS += $(BUILD)/aqm-sim
endif
