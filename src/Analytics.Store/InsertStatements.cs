using System.Buffers;

namespace Analytics.Store;

internal static class InsertStatements
{
    private static readonly SearchValues<char> TokenChars =
        SearchValues.Create("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:");

    private static readonly SearchValues<char> IdentifierChars =
        SearchValues.Create("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_., ");

    // Table, columns and token come from our own code, never from a client; they are still checked
    // so that a mistake can only fail, never inject.
    public static string RowBinaryHeader(string table, string columns, string? deduplicationToken)
    {
        Check(table, IdentifierChars, nameof(table));
        Check(columns, IdentifierChars, nameof(columns));
        var settings = "";
        if (deduplicationToken is not null)
        {
            Check(deduplicationToken, TokenChars, nameof(deduplicationToken));
            settings = $" SETTINGS insert_deduplicate = 1, insert_deduplication_token = '{deduplicationToken}'";
        }

        return $"INSERT INTO {table} ({columns}){settings} FORMAT RowBinary";
    }

    /// <summary>The same insert reading its rows from a local file (embedded engine only).</summary>
    public static string RowBinaryFromFile(string table, string columns, string path, string? deduplicationToken)
    {
        Check(table, IdentifierChars, nameof(table));
        Check(columns, IdentifierChars, nameof(columns));
        var quoted = "'" + path.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("'", "\\'", StringComparison.Ordinal) + "'";
        var settings = "";
        if (deduplicationToken is not null)
        {
            Check(deduplicationToken, TokenChars, nameof(deduplicationToken));
            settings = $" SETTINGS insert_deduplicate = 1, insert_deduplication_token = '{deduplicationToken}'";
        }

        return $"INSERT INTO {table} ({columns}) FROM INFILE {quoted}{settings} FORMAT RowBinary";
    }

    private static void Check(string value, SearchValues<char> allowed, string what)
    {
        if (value.Length == 0 || value.AsSpan().IndexOfAnyExcept(allowed) >= 0)
        {
            throw new ArgumentException($"Invalid {what} '{value}'.", what);
        }
    }
}
