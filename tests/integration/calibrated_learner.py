"""The learner schedule the service scenarios were calibrated with: before issue 18's defaults.

One pass per window: no test-then-train chunks, no young steps, no rehearsal.
The drift and retrain scenarios test the policy and the swap, not the learner;
they pin this until they are re-calibrated against the new defaults.
"""

ONE_PASS_PER_WINDOW = ("--score-chunk", "0", "--young-steps", "1", "--rehearse-steps", "0")
