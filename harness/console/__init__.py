"""Serial console handling: the raw log and the pexpect dialogue on top of any byte stream."""
