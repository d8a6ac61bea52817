from __future__ import annotations

from bellhook.cli import main

main()
