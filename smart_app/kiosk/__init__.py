"""The patient answers alone on a clinic tablet (self-administered mode): pairing, the patient's pages, hand-back."""
