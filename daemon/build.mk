# aqmllmd: nothing to compile. The packaged default model must not be writable by
# group or others or aqmllmd refuses it, as it would any model; a checkout under
# umask 002 leaves it group-writable, so every build puts its mode right.
DAEMON_DEFAULT_MODEL := daemon/aqmllmd/default_model/default.onnx

.PHONY: daemon-model-mode
daemon-model-mode:
	@chmod go-w $(DAEMON_DEFAULT_MODEL)

ALL_TARGETS += daemon-model-mode
