"""Operator surfaces on top of everything else: the ``caxton`` CLI (``cli``),
health checks (``health``), archive export and install (``archive``), and the
Hub-protocol mirror server (``server``)."""
