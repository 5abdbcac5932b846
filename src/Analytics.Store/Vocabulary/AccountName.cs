using System.Text;

namespace Analytics;

/// <summary>
/// The one canonical spelling of an account name, used from AUTH on for the session's identity, every
/// limit, lock, event and feature, the directory and the console: Unicode NFKC, surrounding whitespace
/// removed, lower case. Without it <c>" Alice@x"</c> and <c>"alice@x\t"</c> would be three accounts to
/// the limit book and one to the password check, and a blocked account would walk past its block.
/// </summary>
public static class AccountName
{
    /// <summary>Longest name kept (RFC 5321 path length).</summary>
    public const int MaxLength = 320;

    public static string Normalize(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        string text;
        try
        {
            text = name.IsNormalized(NormalizationForm.FormKC) ? name : name.Normalize(NormalizationForm.FormKC);
        }
        catch (ArgumentException)
        {
            // Lone surrogates (from a client's bytes) have no normal form; such a name matches no account anyway.
            text = name;
        }

        text = text.Trim().ToLowerInvariant();
        return text.Length <= MaxLength ? text : text[..MaxLength];
    }

    /// <summary>A name an account may have: non-empty after normalising, no whitespace or control characters inside.</summary>
    public static bool IsValid(string normalized) =>
        normalized.Length is > 0 and <= MaxLength && !normalized.Any(c => char.IsControl(c) || char.IsWhiteSpace(c) || c == '\uFFFD');
}
