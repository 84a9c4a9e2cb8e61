"""Gateway: the production line's gRPC inspection API in front of Triton.

Cameras send an image and get a verdict in milliseconds, with the exact model version that
produced it; every inspection is published as ``inspection.completed``, and the gateway follows
``model.deployed`` / ``model.rolled_back`` to the production version without failing a request,
and ``model.rollout_changed`` to route a share of the requests to a canary or mirror it to a
shadow, deterministically from the request id (``screwops_gateway.routing``).
"""
