using System.Globalization;
using System.Text.RegularExpressions;

namespace Analytics.Store;

/// <summary>An error reported by ClickHouse itself, with its numeric code and symbolic name.</summary>
public sealed partial class ClickHouseException : Exception
{
    public ClickHouseException(int code, string errorName, string message)
        : base(message)
    {
        Code = code;
        ErrorName = errorName;
    }

    public ClickHouseException()
    {
        ErrorName = "";
    }

    public ClickHouseException(string message) : this(message, null)
    {
    }

    public ClickHouseException(string message, Exception? innerException) : base(message, innerException)
    {
        var parsed = Parse(message);
        Code = parsed.Code;
        ErrorName = parsed.ErrorName;
    }

    /// <summary>ClickHouse's error code (e.g. 62 for SYNTAX_ERROR, 60 for UNKNOWN_TABLE); 0 when unknown.</summary>
    public int Code { get; }

    /// <summary>ClickHouse's symbolic error name, e.g. <c>SYNTAX_ERROR</c>; empty when unknown.</summary>
    public string ErrorName { get; }

    public static ClickHouseException FromMessage(string raw)
    {
        var (code, name) = Parse(raw);
        return new ClickHouseException(code, name, raw.Trim());
    }

    private static (int Code, string ErrorName) Parse(string raw)
    {
        var code = CodePattern().Match(raw);
        var name = NamePattern().Match(raw);
        return (code.Success ? int.Parse(code.Groups[1].Value, CultureInfo.InvariantCulture) : 0,
            name.Success ? name.Groups[1].Value : "");
    }

    [GeneratedRegex(@"Code:\s*(\d+)")]
    private static partial Regex CodePattern();

    [GeneratedRegex(@"\(([A-Z][A-Z0-9_]+)\)(?:\s*\(version[^)]*\))?\s*\.?\s*$", RegexOptions.Multiline)]
    private static partial Regex NamePattern();
}

/// <summary>The store cannot be used at all: engine missing, data directory locked or unwritable, server down.</summary>
public sealed class StoreUnavailableException : Exception
{
    public StoreUnavailableException()
    {
    }

    public StoreUnavailableException(string message) : base(message)
    {
    }

    public StoreUnavailableException(string message, Exception? innerException) : base(message, innerException)
    {
    }
}
