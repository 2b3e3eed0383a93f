"""The paper's analyses (Figures 2, 4, 5; Tables 1-6), as functions the ``scripts/`` call.

One module per artefact family, each usable alone:

- ``macs``: per-conv MACs of Eq. 1-3 and the effective MACs under each strategy (Figure 2).
- ``timing``: mask timing (Table 2) and the per-iteration overhead of S(W), S(W^T) and the IR
  shift (Table 6).
- ``entropy``: H(X) and H(X|X') of intermediate features (Figure 4).
- ``features``: features, adjacent-difference maps and reconstructions (Figure 5).
- ``images``: the natural images (shipped with scikit-image / scikit-learn) and white noise the
  feature analyses feed the network.
- ``paper``: the numbers the paper reports, to print beside ours.
- ``fidelity``: local and propagated gradient error of every strategy per layer, and its
  effect on one training step (issue 24; ``scripts/gradient_fidelity.py``).
- ``tables``: Tables 1, 3, 4, 5 from run directories' ``summary.json`` (``make_tables``).
- ``report``: CSV / Markdown writers and the provenance line (command, machine, commit, date).
"""
