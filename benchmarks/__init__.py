"""Reproducible performance scenarios for Chorus (DESIGN.md section 6).

``python -m benchmarks generate`` fills a dedicated PostgreSQL database with
deterministic customers, consents and activities at COPY speed;
``python -m benchmarks run`` times Chorus code paths side by side with
hand-written PostgreSQL baselines on that database. See ``benchmarks/README.md``.
"""
