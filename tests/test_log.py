import logging

from gateway.log import MaskingFilter, mask_phone


def test_log_mask_phone():
    assert mask_phone("+6281234567890") == "+62812****890"
    assert mask_phone("+2547") == "****"


def test_log_filter_masks_numbers_left_in_messages():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "from %s nik %s ref %s",
                               ("+6281234567890", "3201234567890123", "K7ABCDE"), None)
    MaskingFilter().filter(record)
    assert record.getMessage() == "from +62812****890 nik [16 digits] ref K7ABCDE"
