import locale
def test_locale():
    assert locale.getpreferredencoding(False) == "UTF-8", locale.setlocale(locale.LC_ALL, None)
