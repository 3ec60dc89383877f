"""The conformance suite: talks QMP to any endpoint and compares what they do.

Modules: :mod:`conformance.endpoints` (launch or attach to an endpoint), :mod:`conformance.observe`
(the normalized projection of replies, events and block-node state), :mod:`conformance.scenario`
(scenarios stated once as data, run on any endpoint, checked and compared).
"""
