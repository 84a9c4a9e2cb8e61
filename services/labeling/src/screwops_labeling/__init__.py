"""Labeling: every image of a dataset version gets its ground truth, then ``dataset.labeled``.

Labels come from the import layout (provenance ``import``), from a labeling tool's export (a CSV,
Label Studio JSON or JSON-MIN; provenance ``file``), from people over gRPC (``manual``) and from
reviewers of the gateway's uncertain or disputed inspections (``review``). A version is announced
as labeled when its last image gets a label, or when an operator closes it with the unlabeled
images excluded.
"""
