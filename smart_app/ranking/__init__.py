"""The app's per-launch view of the referral ranking, shared by the urgent box and the referral page."""
