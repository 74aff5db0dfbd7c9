"""``kubectl gpubudget``: the operator's budgets as engineers and finance ask about them.

One module per verb (``estimate``, ``top``, ``pending``/``approve``, ``report``,
``export``) over a few shared concerns: the cluster (:mod:`.cluster`), the
operator's history in Prometheus (:mod:`.history`, :mod:`.periods`) and output
(:mod:`.output`). Each verb's pure part (rows from facts) is separate from the
calls that fetch the facts, so it is tested without a cluster.
"""
