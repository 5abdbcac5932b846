using System.Net;

namespace Analytics;

/// <summary>An account, a client address or a network (<c>a.b.c.0/24</c>, <c>x:x:x:x::/64</c>, any prefix).</summary>
public readonly record struct EntityRef(EntityKind Kind, string Name)
{
    public static EntityRef User(string name) => new(EntityKind.User, name);

    public static EntityRef Ip(IPAddress address) => new(EntityKind.Ip, AddressKey.Unmap(address).ToString());

    /// <summary>
    /// Parses <c>user:alice@example.org</c>, <c>ip:127.1.2.3</c>, <c>net:127.1.2.0/24</c>, or a bare
    /// address, IP or network. Networks are written canonically (host bits cleared).
    /// </summary>
    public static bool TryParse(string? text, out EntityRef entity)
    {
        entity = default;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        text = text.Trim();
        var colon = text.IndexOf(':', StringComparison.Ordinal);
        if (colon > 0 && EntityKinds.TryParse(text[..colon], out var kind))
        {
            return TryCreate(kind, text[(colon + 1)..], out entity);
        }

        var guessed = text.Contains('@', StringComparison.Ordinal) ? EntityKind.User
            : text.Contains('/', StringComparison.Ordinal) ? EntityKind.Net
            : EntityKind.Ip;
        return TryCreate(guessed, text, out entity);
    }

    /// <summary>An entity of <paramref name="kind"/> named <paramref name="name"/>, in canonical form; false when the name does not fit the kind.</summary>
    public static bool TryCreate(EntityKind kind, string name, out EntityRef entity)
    {
        entity = default;
        name = name.Trim();
        switch (kind)
        {
            case EntityKind.User when name.Length > 0:
                entity = new EntityRef(kind, AccountName.Normalize(name));
                return true;
            case EntityKind.Ip when IPAddress.TryParse(name, out var ip):
                entity = Ip(ip);
                return true;
            case EntityKind.Net when AddressKey.TryParseNetwork(name, out var network):
                entity = new EntityRef(kind, network.ToString());
                return true;
            default:
                return false;
        }
    }

    public override string ToString() => Kind.ToText() + ":" + Name;
}
