namespace Analytics;

/// <summary>What a verdict, a limit, a label or a feature row is about: an account, a client address, or a network.</summary>
/// <remarks>The text forms (<c>user</c>, <c>ip</c>, <c>net</c>) are the values of the <c>entity_kind</c> columns.</remarks>
[System.Text.Json.Serialization.JsonConverter(typeof(EntityKindJsonConverter))]
public enum EntityKind : byte
{
    User = 1,
    Ip = 2,
    Net = 3,
}

public static class EntityKinds
{
    public static string ToText(this EntityKind kind) => kind switch
    {
        EntityKind.User => "user",
        EntityKind.Ip => "ip",
        EntityKind.Net => "net",
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "not an entity kind"),
    };

    public static bool TryParse(string? text, out EntityKind kind)
    {
        kind = text switch
        {
            "user" => EntityKind.User,
            "ip" => EntityKind.Ip,
            "net" => EntityKind.Net,
            _ => default,
        };
        return kind != default;
    }

    public static EntityKind Parse(string text) =>
        TryParse(text, out var kind) ? kind : throw new FormatException($"'{text}' is not an entity kind (user, ip, net).");

    /// <summary>A client address or a network, rather than an account.</summary>
    public static bool IsHost(this EntityKind kind) => kind is EntityKind.Ip or EntityKind.Net;
}
