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
    public static string Header(string table, string? columns, InsertFormat format, string? deduplicationToken) =>
        $"INSERT INTO {Target(table, columns)}{Settings(deduplicationToken)} FORMAT {format}";

    /// <summary>The same insert reading its data from a local file (embedded engine only).</summary>
    public static string FromFile(string table, string? columns, InsertFormat format, string path, string? deduplicationToken)
    {
        var quoted = "'" + path.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("'", "\\'", StringComparison.Ordinal) + "'";
        return $"INSERT INTO {Target(table, columns)} FROM INFILE {quoted}{Settings(deduplicationToken)} FORMAT {format}";
    }

    private static string Target(string table, string? columns)
    {
        Check(table, IdentifierChars, nameof(table));
        if (columns is null)
        {
            return table;
        }

        Check(columns, IdentifierChars, nameof(columns));
        return $"{table} ({columns})";
    }

    private static string Settings(string? deduplicationToken)
    {
        if (deduplicationToken is null)
        {
            return "";
        }

        Check(deduplicationToken, TokenChars, nameof(deduplicationToken));
        return $" SETTINGS insert_deduplicate = 1, insert_deduplication_token = '{deduplicationToken}', deduplicate_blocks_in_dependent_materialized_views = 1";
    }

    private static void Check(string value, SearchValues<char> allowed, string what)
    {
        if (value.Length == 0 || value.AsSpan().IndexOfAnyExcept(allowed) >= 0)
        {
            throw new ArgumentException($"Invalid {what} '{value}'.", what);
        }
    }
}
