from bcc.cli import entry

entry()
