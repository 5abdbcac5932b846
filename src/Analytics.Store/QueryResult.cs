using System.Globalization;
using System.Text;

namespace Analytics.Store;

public sealed record QueryColumn(string Name, string Type);

/// <summary>
/// Rows of a query with .NET values chosen from the ClickHouse type: signed integers → <see cref="long"/>,
/// unsigned → <see cref="ulong"/>, floats → <see cref="double"/>, Decimal → <see cref="decimal"/>,
/// Bool → <see cref="bool"/>, Date → <see cref="DateOnly"/>, DateTime/DateTime64 → UTC <see cref="DateTime"/>,
/// Array(T) → <c>object?[]</c>, NULL → <c>null</c>, everything else (String, Enum, UUID, IPs) → <see cref="string"/>.
/// Both backends produce the same values for the same query.
/// </summary>
public sealed class QueryResult
{
    public QueryResult(IReadOnlyList<QueryColumn> columns, IReadOnlyList<object?[]> rows)
    {
        Columns = columns;
        Rows = rows;
    }

    public IReadOnlyList<QueryColumn> Columns { get; }

    public IReadOnlyList<object?[]> Rows { get; }

    public int Ordinal(string column)
    {
        for (var i = 0; i < Columns.Count; i++)
        {
            if (Columns[i].Name == column)
            {
                return i;
            }
        }

        throw new KeyNotFoundException($"The result has no column '{column}'; it has {string.Join(", ", Columns.Select(c => c.Name))}.");
    }

    /// <summary>The single value of a one-row, one-column result, converted to <typeparamref name="T"/>.</summary>
    public T Scalar<T>() => Rows.Count == 0 ? throw new InvalidOperationException("The query returned no rows.") : Convert<T>(Rows[0][0]);

    public T Get<T>(int row, string column) => Convert<T>(Rows[row][Ordinal(column)]);

    public static T Convert<T>(object? value)
    {
        if (value is null)
        {
            return default!;
        }

        if (value is T t)
        {
            return t;
        }

        var target = Nullable.GetUnderlyingType(typeof(T)) ?? typeof(T);
        return (T)System.Convert.ChangeType(value, target, CultureInfo.InvariantCulture);
    }

    /// <summary>Decodes ClickHouse's TabSeparatedWithNamesAndTypes output.</summary>
    internal static QueryResult FromTsvWithNamesAndTypes(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty)
        {
            return new QueryResult([], []);
        }

        var lines = new List<string>();
        var text = Encoding.UTF8.GetString(data);
        var start = 0;
        for (var i = 0; i < text.Length; i++)
        {
            if (text[i] == '\n')
            {
                lines.Add(text[start..i]);
                start = i + 1;
            }
        }

        if (start < text.Length)
        {
            lines.Add(text[start..]);
        }

        if (lines.Count < 2)
        {
            return new QueryResult([], []);
        }

        var names = lines[0].Split('\t').Select(Unescape).ToArray();
        var types = lines[1].Split('\t').Select(Unescape).ToArray();
        var columns = names.Zip(types, (n, t) => new QueryColumn(n, t)).ToArray();
        var rows = new List<object?[]>(lines.Count - 2);
        for (var l = 2; l < lines.Count; l++)
        {
            var fields = lines[l].Split('\t');
            var row = new object?[columns.Length];
            for (var c = 0; c < columns.Length && c < fields.Length; c++)
            {
                // Arrays keep their own quoting inside the field: parse them from the raw text.
                row[c] = fields[c] == "\\N" ? null
                    : ClickHouseValue.Parse(ClickHouseValue.IsArray(columns[c].Type) ? fields[c] : Unescape(fields[c]), columns[c].Type);
            }

            rows.Add(row);
        }

        return new QueryResult(columns, rows);
    }

    private static string Unescape(string field)
    {
        if (!field.Contains('\\', StringComparison.Ordinal))
        {
            return field;
        }

        var sb = new StringBuilder(field.Length);
        for (var i = 0; i < field.Length; i++)
        {
            var ch = field[i];
            if (ch != '\\' || i + 1 >= field.Length)
            {
                sb.Append(ch);
                continue;
            }

            var next = field[++i];
            sb.Append(next switch
            {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                'b' => '\b',
                'f' => '\f',
                '0' => '\0',
                'a' => '\a',
                'v' => '\v',
                _ => next,
            });
        }

        return sb.ToString();
    }
}

/// <summary>Text → .NET value by ClickHouse type name; shared by the embedded decoder and the server normaliser.</summary>
internal static class ClickHouseValue
{
    public static string Unwrap(string type)
    {
        while (true)
        {
            if (type.StartsWith("Nullable(", StringComparison.Ordinal) || type.StartsWith("LowCardinality(", StringComparison.Ordinal))
            {
                type = type[(type.IndexOf('(', StringComparison.Ordinal) + 1)..^1];
                continue;
            }

            return type;
        }
    }

    public static bool IsArray(string type) => Unwrap(type).StartsWith("Array(", StringComparison.Ordinal);

    public static object? Parse(string text, string type)
    {
        type = Unwrap(type);
        if (type.StartsWith("Array(", StringComparison.Ordinal))
        {
            var inner = type[6..^1];
            return ParseArray(text).Select(e => e is null ? null : Parse(e, inner)).ToArray();
        }

        var inv = CultureInfo.InvariantCulture;
        return type switch
        {
            "Int8" or "Int16" or "Int32" or "Int64" => long.Parse(text, inv),
            "UInt8" or "UInt16" or "UInt32" or "UInt64" => ulong.Parse(text, inv),
            "Float32" or "Float64" => ParseDouble(text),
            "Bool" => text == "true" || text == "1",
            "Date" or "Date32" => DateOnly.ParseExact(text, "yyyy-MM-dd", inv),
            _ when type.StartsWith("Decimal", StringComparison.Ordinal) => decimal.Parse(text, inv),
            _ when type.StartsWith("DateTime", StringComparison.Ordinal) =>
                DateTime.SpecifyKind(DateTime.Parse(text, inv, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal), DateTimeKind.Utc),
            _ => text,
        };
    }

    private static double ParseDouble(string text) => text switch
    {
        "nan" or "-nan" => double.NaN,
        "inf" or "+inf" => double.PositiveInfinity,
        "-inf" => double.NegativeInfinity,
        _ => double.Parse(text, CultureInfo.InvariantCulture),
    };

    // ClickHouse's text form of an array: [1,2] or ['a','b\'c'] or [NULL]. Nested arrays stay text.
    private static List<string?> ParseArray(string text)
    {
        var items = new List<string?>();
        if (text.Length < 2)
        {
            return items;
        }

        var i = 1;
        while (i < text.Length - 1)
        {
            if (text[i] == ',' || text[i] == ' ')
            {
                i++;
                continue;
            }

            if (text[i] == '\'')
            {
                var sb = new StringBuilder();
                i++;
                while (i < text.Length && text[i] != '\'')
                {
                    if (text[i] == '\\' && i + 1 < text.Length)
                    {
                        i++;
                        sb.Append(text[i] switch { 'n' => '\n', 't' => '\t', 'r' => '\r', '0' => '\0', 'b' => '\b', 'f' => '\f', var other => other });
                        i++;
                        continue;
                    }

                    sb.Append(text[i]);
                    i++;
                }

                i++;
                items.Add(sb.ToString());
                continue;
            }

            var depth = 0;
            var begin = i;
            while (i < text.Length - 1 && (depth > 0 || text[i] != ','))
            {
                depth += text[i] switch { '[' or '(' => 1, ']' or ')' => -1, _ => 0 };
                i++;
            }

            var item = text[begin..i];
            items.Add(item == "NULL" ? null : item);
        }

        return items;
    }
}
