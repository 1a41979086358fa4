"""Windows guests installed unattended by the harness: the answer file, the answer disc, the
install run (``refvm images fetch``)."""
