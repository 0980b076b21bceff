from portal.mail.sanitize import sanitize_html


def test_remote_content_tricks_are_removed():
    dirty = ('<meta http-equiv="refresh" content="0;url=https://evil.example">'
             '<base href="https://evil.example/"><link rel="stylesheet" href="https://evil.example/x.css">'
             '<div style="color:red;background-image:url(https://track.example/p.png)">styled</div>'
             '<table background="https://track.example/bg.png"><tr><td>cell</td></tr></table>'
             '<img srcset="https://track.example/a.png 2x" src="https://track.example/b.png">'
             '<form action="https://evil.example"><input name="pw"></form><iframe src="https://evil.example"></iframe>'
             '<svg><script>alert(1)</script></svg><a href="vbscript:x">v</a><a href="data:text/html,x">d</a>')
    clean = sanitize_html(dirty)
    for bad in ("evil.example", "track.example", "script", "<form", "<input", "iframe", "vbscript", "data:text"):
        assert bad not in clean, bad
    assert "color:red" in clean and "styled" in clean and "cell" in clean


def test_links_open_safely_and_cid_images_can_be_rewritten():
    clean = sanitize_html('<a href="https://ok.example/">ok</a><img src="cid:logo@x" alt="logo">',
                          cid_urls={"logo@x": "/attachments/7"})
    assert 'href="https://ok.example/"' in clean and 'rel="noopener noreferrer nofollow"' in clean
    assert 'src="/attachments/7"' in clean and 'alt="logo"' in clean


def test_remote_images_only_when_allowed():
    html = '<img src="https://images.example/a.png">'
    assert "images.example" not in sanitize_html(html)
    assert "images.example" in sanitize_html(html, allow_remote_images=True)
    assert 'src="data:image/png;base64,AAAA"' in sanitize_html('<img src="data:image/png;base64,AAAA">')
    assert "svg" not in sanitize_html('<img src="data:image/svg+xml;base64,AAAA">')
