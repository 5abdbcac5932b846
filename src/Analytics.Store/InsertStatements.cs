using System.Buffers;

namespace Analytics.Store;

internal static class InsertStatements
{
    private static readonly SearchValues<char> TokenChars =
        SearchValues.Create("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:");

    private static readonly SearchValues<char> IdentifierChars =
        SearchValues.Create("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_., ");

    // Tables filled with rows already grouped per sort key (the event sink's aggregates, 0030): merging
    // an inserted block finds nothing to merge, and with seven aggregate-state columns it cost 3x the
    // insert itself (measured: 122k vs 399k rows/s into activity). The setting also reaches the
    // views an insert feeds. activity and activity_hourly are written directly since the sink builds
    // the uniq states itself; activity_in and activity_hourly_in still take frames spooled before that.
    private static readonly HashSet<string> PreAggregated = new(StringComparer.Ordinal)
    {
        "activity", "activity_hourly", "activity_in", "activity_hourly_in", "active_entities", "first_seen",
    };

    // Table, columns and token come from our own code, never from a client; they are still checked
    // so that a mistake can only fail, never inject.
    public static string Header(string table, string? columns, InsertFormat format, string? deduplicationToken) =>
        $"INSERT INTO {Target(table, columns)}{Settings(table, deduplicationToken)} FORMAT {format}";

    /// <summary>The same insert reading its data from a local file (embedded engine only).</summary>
    public static string FromFile(string table, string? columns, InsertFormat format, string path, string? deduplicationToken)
    {
        var quoted = "'" + path.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("'", "\\'", StringComparison.Ordinal) + "'";
        return $"INSERT INTO {Target(table, columns)} FROM INFILE {quoted}{Settings(table, deduplicationToken)} FORMAT {format}";
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

    private static string Settings(string table, string? deduplicationToken)
    {
        var settings = new List<string>(4);
        if (deduplicationToken is not null)
        {
            Check(deduplicationToken, TokenChars, nameof(deduplicationToken));
            settings.Add("insert_deduplicate = 1");
            settings.Add($"insert_deduplication_token = '{deduplicationToken}'");

            // A Null table keeps no blocks to compare: the views' targets must deduplicate themselves
            // (the default of servers before 24.x is 0).
            settings.Add("deduplicate_blocks_in_dependent_materialized_views = 1");
        }

        if (PreAggregated.Contains(table))
        {
            settings.Add("optimize_on_insert = 0");
        }

        return settings.Count == 0 ? "" : " SETTINGS " + string.Join(", ", settings);
    }

    private static void Check(string value, SearchValues<char> allowed, string what)
    {
        if (value.Length == 0 || value.AsSpan().IndexOfAnyExcept(allowed) >= 0)
        {
            throw new ArgumentException($"Invalid {what} '{value}'.", what);
        }
    }
}
