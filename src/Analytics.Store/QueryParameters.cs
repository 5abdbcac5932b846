using System.Globalization;
using System.Net;

namespace Analytics.Store;

/// <summary>
/// Named query parameters for <c>{name:Type}</c> placeholders. Values are passed to ClickHouse as text
/// in its own escaping; ClickHouse parses them by the placeholder's type, so client input never
/// becomes SQL.
/// </summary>
public sealed class QueryParameters : Dictionary<string, object?>
{
    public QueryParameters() : base(StringComparer.Ordinal)
    {
    }

    public static QueryParameters Of(params (string Name, object? Value)[] values)
    {
        var p = new QueryParameters();
        foreach (var (name, value) in values)
        {
            p[name] = value;
        }

        return p;
    }

    /// <summary>The text form ClickHouse expects for a parameter value.</summary>
    public static string Format(object? value) => value switch
    {
        null => "\\N",
        string s => EscapeText(s),
        bool b => b ? "true" : "false",
        DateTime dt => FormatTime(dt.Kind == DateTimeKind.Unspecified ? dt : dt.ToUniversalTime()),
        DateTimeOffset dto => FormatTime(dto.UtcDateTime),
        IPAddress ip => ip.ToString(),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        System.Collections.IEnumerable e => "[" + string.Join(",", e.Cast<object?>().Select(Quote)) + "]",
        _ => value.ToString() ?? "",
    };

    // Parameter values travel in ClickHouse's TSV escaping: a backslash, tab or newline must be escaped.
    private static string EscapeText(string s) =>
        s.AsSpan().IndexOfAny("\\\t\n\r\0") < 0
            ? s
            : s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\t", "\\t", StringComparison.Ordinal)
                .Replace("\n", "\\n", StringComparison.Ordinal).Replace("\r", "\\r", StringComparison.Ordinal)
                .Replace("\0", "\\0", StringComparison.Ordinal);

    // Whole seconds are written without a fraction so that the value also fits a DateTime placeholder.
    private static string FormatTime(DateTime utc) =>
        utc.ToString(utc.Ticks % TimeSpan.TicksPerSecond == 0 ? "yyyy-MM-dd HH:mm:ss" : "yyyy-MM-dd HH:mm:ss.fff", CultureInfo.InvariantCulture);

    private static string Quote(object? value) => value switch
    {
        null => "NULL",
        string s => "'" + s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("'", "\\'", StringComparison.Ordinal) + "'",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => "'" + value + "'",
    };
}
