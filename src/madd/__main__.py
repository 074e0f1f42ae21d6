"""``python -m madd <command>``: the ``madd`` command (:mod:`madd.console`)."""

from madd.console import main

main()
