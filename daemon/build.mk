# aqmllmd: nothing to compile. The packaged models must not be writable by group or
# others or aqmllmd refuses them, as it would any model; a checkout under umask 002
# leaves them group-writable, so every build puts their mode right.
DAEMON_MODELS := daemon/aqmllmd/default_model/default.onnx \
	daemon/aqmllmd/default_model/student.onnx \
	daemon/aqmllmd/default_model/interim.onnx

.PHONY: daemon-model-mode
daemon-model-mode:
	@chmod go-w $(DAEMON_MODELS)

ALL_TARGETS += daemon-model-mode
