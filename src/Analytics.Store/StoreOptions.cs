using System.ComponentModel.DataAnnotations;

namespace Analytics.Store;

/// <summary>Where events and everything derived from them live (section <c>Store</c>).</summary>
public sealed class StoreOptions
{
    /// <summary>
    /// A ClickHouse server, as a connection string (<c>Host=…;Port=8123;Username=…;Password=…;Database=…</c>)
    /// or an HTTP URL (<c>http://user:pass@host:8123/db</c>). Empty (the default) means the embedded engine
    /// in the data directory.
    /// </summary>
    public string? Server { get; set; }

    /// <summary>Days raw events are kept before ClickHouse drops them. Default 90.</summary>
    [Range(1, 3650)]
    public int RetentionDays { get; set; } = 90;
}
