using System.Globalization;
using System.Net;
using Analytics.Events;

namespace Analytics.Simulation.Models;

/// <summary>
/// A simulated actor (a person, a server, a bot campaign). <see cref="Plan"/> returns its sessions
/// starting in [from, to), using only the random source it is given: the runner seeds that from
/// (scenario seed, entity, day), so a day is planned the same way whatever order or thread plans it.
/// </summary>
internal abstract class Entity
{
    protected Entity(int index, string label)
    {
        Index = index;
        Class = label;
    }

    public int Index { get; }

    public string Class { get; }

    /// <summary>The population (a benign label's variant) or attack variant its sessions are reported under.</summary>
    public string Population { get; init; } = "";

    public abstract void Plan(World world, DateTimeOffset from, DateTimeOffset to, Random random, List<SessionScript> output);

    /// <summary>A deterministic seed for (scenario, entity, day); not HashCode, which differs per process.</summary>
    public static int Seed(int scenarioSeed, int entity, int day)
    {
        unchecked
        {
            var h = (ulong)(uint)scenarioSeed * 0x9E3779B97F4A7C15UL;
            h ^= ((ulong)(uint)entity + 0x632BE59BD9B4E019UL) * 0xBF58476D1CE4E5B9UL;
            h ^= ((ulong)(uint)day + 0x8CB92BA72F3D8DD7UL) * 0x94D049BB133111EBUL;
            h ^= h >> 31;
            return (int)(h ^ (h >> 32));
        }
    }

    protected static TimeSpan Ms(Random random, int min, int max) => TimeSpan.FromMilliseconds(random.Next(min, max + 1));

    protected static TimeSpan Seconds(double seconds) => TimeSpan.FromSeconds(seconds);

    protected static ushort Port(Random random) => (ushort)random.Next(32768, 61000);

    protected static ulong NewSessionId(Random random) => (ulong)random.NextInt64() | 1UL;

    protected static T Pick<T>(Random random, IReadOnlyList<T> list) => list[random.Next(list.Count)];

    protected static string ExternalAddress(Random random, Vocabulary v) =>
        Pick(random, v.First) + "." + Pick(random, v.Last) + random.Next(100).ToString(CultureInfo.InvariantCulture) + "@" + Pick(random, v.ExternalDomains);

    protected SessionScript Script(Random random, IPAddress ip, ListenerRole role, DateTimeOffset start, List<Step> steps, bool wellBehaved = false) => new()
    {
        SessionId = NewSessionId(random),
        ClientIp = ip,
        ClientPort = Port(random),
        Role = role,
        Start = start,
        Steps = steps,
        Class = Class,
        Population = Population,
        WellBehaved = wellBehaved,
    };

    /// <summary>EHLO, STARTTLS, EHLO again (as every TLS client does), with client-side think times.</summary>
    protected static void Greet(List<Step> steps, Random random, string helo, bool tls) => Greet(steps, random, helo, tls ? TlsClient.OpenSsl : null);

    /// <summary>EHLO, then STARTTLS as <paramref name="tls"/> negotiates it and EHLO again, or no TLS (null).</summary>
    protected static void Greet(List<Step> steps, Random random, string helo, TlsClient? tls)
    {
        steps.Add(new Step(StepKind.Ehlo, Ms(random, 5, 40), helo));
        if (tls is { } client)
        {
            steps.Add(new Step(StepKind.StartTls, Ms(random, 2, 10), client.Cipher, Mechanism: client.Protocol));
            steps.Add(new Step(StepKind.Ehlo, Ms(random, 2, 10), helo));
        }
    }

    /// <summary>Whether the address's domain is one of the world's.</summary>
    protected static bool IsLocal(World world, string address)
    {
        var at = address.IndexOf('@', StringComparison.Ordinal);
        return at > 0 && world.Domains.Contains(address[(at + 1)..]);
    }

    protected static void Message(List<Step> steps, Random random, string sender, IEnumerable<string> recipients, int size, int delayMin = 2, int delayMax = 20)
    {
        steps.Add(new Step(StepKind.Mail, Ms(random, delayMin, delayMax), sender, Size: size));
        foreach (var r in recipients)
        {
            steps.Add(new Step(StepKind.Rcpt, Ms(random, delayMin, delayMax), r));
        }

        steps.Add(new Step(StepKind.Data, Ms(random, delayMin, delayMax), Size: size));
    }

    protected static int MessageSize(Random random) => (int)Math.Min(5_000_000, 1500 + Math.Exp(random.NextDouble() * 11));

    /// <summary>Local hour of day weighted like office mail: quiet nights, a morning peak, a smaller evening bump.</summary>
    private static readonly double[] HourWeights =
    [
        0.2, 0.1, 0.1, 0.1, 0.1, 0.3, 0.8, 2.0, 4.0, 6.0, 6.5, 6.0, 4.5, 5.0, 6.0, 6.0, 5.5, 4.5, 3.0, 2.5, 2.5, 2.0, 1.2, 0.5,
    ];

    private static readonly double HourTotal = HourWeights.Sum();

    protected static DateTimeOffset DiurnalTime(Random random, DateTimeOffset dayStart)
    {
        var x = random.NextDouble() * HourTotal;
        var hour = 0;
        while (hour < 23 && x >= HourWeights[hour])
        {
            x -= HourWeights[hour];
            hour++;
        }

        return dayStart.AddHours(hour).AddSeconds(random.NextDouble() * 3600);
    }

    protected static bool Weekend(DateTimeOffset day) => day.DayOfWeek is DayOfWeek.Saturday or DayOfWeek.Sunday;
}

/// <summary>
/// What a client's STARTTLS negotiates with this server: protocol and cipher suite, as the listener
/// records them. The pools are what common software gets (SChannel and OpenSSL clients AES-256, Apple's
/// and Go's stacks AES-128, phones without AES instructions ChaCha20, old Windows TLS 1.2); attack
/// tools are built on the same libraries, so their values overlap people's.
/// </summary>
internal readonly record struct TlsClient(string Protocol, string Cipher)
{
    public static readonly TlsClient OpenSsl = new("Tls13", "TLS_AES_256_GCM_SHA384");
    public static readonly TlsClient Apple = new("Tls13", "TLS_AES_128_GCM_SHA256");
    public static readonly TlsClient ChaCha = new("Tls13", "TLS_CHACHA20_POLY1305_SHA256");
    public static readonly TlsClient OldWindows = new("Tls12", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384");

    /// <summary>A desktop or laptop client: half AES-256, three in ten AES-128, two in ten TLS 1.2.</summary>
    public static TlsClient Desktop(int roll) => (roll % 10) switch { < 5 => OpenSsl, < 8 => Apple, _ => OldWindows };

    /// <summary>A phone: mostly Apple's stack, a quarter ChaCha20 (Android), the rest AES-256.</summary>
    public static TlsClient Phone(int roll) => (roll % 20) switch { < 12 => Apple, < 17 => ChaCha, _ => OpenSsl };

    /// <summary>An attack tool: Python or curl on OpenSSL, Go, now and then an old library.</summary>
    public static TlsClient Tool(int roll) => (roll % 10) switch { < 6 => OpenSsl, < 9 => Apple, _ => OldWindows };
}
