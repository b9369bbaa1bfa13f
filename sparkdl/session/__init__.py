"""What a fit needs from the user's SparkSession, for either kind of session.

A classic session (py4j, the driver in this process) and a Spark Connect session
(``sc://``: the driver is a server elsewhere; no SparkContext, no py4j) answer the
same questions: task slots, confs, whether the session stopped, and whether the
executors' Python can run sparkdl. :func:`facts_for` picks the implementation from
the session's own type, never from a setting.

Example::

    from sparkdl.session import facts_for

    facts = facts_for(spark)
    slots = facts.check_capacity(num_workers=2)
    facts.check_executor_python(slots, num_workers=2, backend="torch")
"""

from __future__ import annotations

from sparkdl.session.base import SessionFacts


def is_connect(spark) -> bool:
    """Whether ``spark`` is a Spark Connect session (``SparkSession.builder.remote``).

    Decided by the session object's class, not by ``pyspark.sql.utils.is_remote()``,
    which reads a process-wide environment variable: one process may hold a classic
    and a Connect session at once (the tests do).

    Example:
        >>> from pyspark.sql import SparkSession
        >>> is_connect(SparkSession.__new__(SparkSession))
        False
    """
    return type(spark).__module__.startswith("pyspark.sql.connect")


def facts_for(spark) -> SessionFacts:
    """The :class:`SessionFacts` of ``spark``, classic or Spark Connect.

    Example::

        facts_for(SparkSession.builder.remote("sc://127.0.0.1:15002").getOrCreate()).kind
        # 'connect'
    """
    if is_connect(spark):
        from sparkdl.session.connect import ConnectFacts

        return ConnectFacts(spark)
    from sparkdl.session.classic import ClassicFacts

    return ClassicFacts(spark)


__all__ = ["SessionFacts", "facts_for", "is_connect"]
