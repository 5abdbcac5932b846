namespace Analytics.Review.Web;

/// <summary>
/// Where a login may send the browser next: a path on this site, never another host. The rules of
/// ASP.NET Core's <c>UrlHelper.IsLocalUrl</c> (a single leading <c>/</c>, not <c>//</c> or <c>/\</c>, no
/// control characters), made stricter: no whitespace, backslash or invisible formatting character anywhere; the same rules hold after
/// percent-decoding (a proxy, a browser or a later hop may decode <c>/%09/evil</c> or <c>/%2F/evil</c>);
/// and resolved against a base URI it must stay on that host. Anything else goes to the queue.
/// </summary>
internal static class ReturnUrl
{
    private const int MaxLength = 2048;
    private static readonly Uri Base = new("http://console.invalid/");

    public static bool IsLocal(string? url)
    {
        if (string.IsNullOrEmpty(url) || url.Length > MaxLength || !IsLocalPath(url))
        {
            return false;
        }

        // Percent-decoded to a fixed point (an attacker may encode more than once), each form must be local too.
        var decoded = url;
        for (var round = 0; ; round++)
        {
            var next = Uri.UnescapeDataString(decoded);
            if (next == decoded)
            {
                return true;
            }

            if (round == 3 || next.Length == 0 || !IsLocalPath(next))
            {
                return false;
            }

            decoded = next;
        }
    }

    private static bool IsLocalPath(string url)
    {
        if (url[0] != '/' || (url.Length > 1 && url[1] is '/' or '\\'))
        {
            return false;
        }

        foreach (var c in url)
        {
            if (char.IsControl(c) || char.IsWhiteSpace(c) || c == '\\' || char.GetUnicodeCategory(c) == System.Globalization.UnicodeCategory.Format)
            {
                return false;
            }
        }

        return Uri.TryCreate(url, UriKind.Relative, out _)
            && Uri.TryCreate(Base, url, out var resolved)
            && resolved.Scheme == Base.Scheme && resolved.Host == Base.Host && resolved.Port == Base.Port && resolved.UserInfo.Length == 0;
    }
}
