using System.Collections;
using System.CommandLine;
using System.ComponentModel.DataAnnotations;
using System.Globalization;
using System.Reflection;
using System.Text.RegularExpressions;
using Analytics.Cli.Hosting;
using Analytics.Detection.Scoring;
using Analytics.Events;
using Analytics.Store;
using Analytics.Submission;
using Microsoft.Extensions.Configuration;

namespace Analytics.Cli.Commands;

/// <summary>
/// <c>analytics config check [FILE]</c>: loads the configuration exactly as <c>serve</c> does
/// (appsettings.json, FILE, ANALYTICS_* environment), binds and validates every options section, and
/// explains each problem with its key path and the allowed range. Keys that no section knows are
/// warnings: the binder ignores them silently, which is how a typo goes unnoticed for months.
/// </summary>
internal static partial class ConfigCommand
{
    /// <summary>Sections serve reads, with the options type that binds them (null: not validated here).</summary>
    private static readonly Dictionary<string, Type?> Sections = new(StringComparer.OrdinalIgnoreCase)
    {
        ["Store"] = typeof(StoreOptions),
        ["Events"] = typeof(EventSinkOptions),
        [SubmissionOptions.SectionName] = typeof(SubmissionOptions),
        ["Detection"] = typeof(DetectionOptions),
        ["Metrics"] = typeof(MetricsOptions),
        ["Serilog"] = null,
        ["Logging"] = null,
        ["Review"] = null,
        ["Limits"] = null,
        ["Kestrel"] = null,
        ["AllowedHosts"] = null,
        ["DataDirectory"] = null,
        ["DATA"] = null,
    };

    public static Command Create(CommandContext context)
    {
        var file = new Argument<string?>("FILE") { Description = "Configuration file to check (default: --config, else appsettings.json and the environment alone)", Arity = ArgumentArity.ZeroOrOne };
        var check = new Command("check", "Validate a configuration file as serve would load it: every section, every key, with the allowed ranges. Exit 0 when valid (warnings allowed), 2 when not.")
        {
            file,
        };
        check.SetAction(async (parse, cancellationToken) =>
        {
            var path = parse.GetValue(file) ?? parse.GetValue(GlobalOptions.Config);
            var settings = AnalyticsSettings.Load(parse.GetValue(GlobalOptions.Data), path);
            var report = Check(settings.Configuration, path is null ? null : FileOnly(path));
            var output = context.IO.Out;
            await output.WriteLineAsync(path is null ? "checking appsettings.json and ANALYTICS_* environment" : $"checking {Path.GetFullPath(path)} (with appsettings.json and ANALYTICS_* environment, as serve loads it)");
            foreach (var error in report.Errors)
            {
                await output.WriteLineAsync("  error:   " + error);
            }

            foreach (var warning in report.Warnings)
            {
                await output.WriteLineAsync("  warning: " + warning);
            }

            if (report.Errors.Count > 0)
            {
                await context.IO.Error.WriteLineAsync($"error: configuration is not valid: {report.Errors.Count} error(s), {report.Warnings.Count} warning(s)");
                return 2;
            }

            await output.WriteLineAsync($"configuration is valid ({report.Warnings.Count} warning(s))");
            return 0;
        });
        var command = new Command("config", "Configuration: check a file before serve uses it") { check };
        return command;
    }

    /// <summary>What is wrong (errors) and what looks wrong (warnings) in <paramref name="configuration"/>.</summary>
    /// <param name="fileOnly">The file alone, for unknown-key warnings (environment variables are not checked for spelling).</param>
    public static (IReadOnlyList<string> Errors, IReadOnlyList<string> Warnings) Check(IConfiguration configuration, IConfiguration? fileOnly)
    {
        var errors = new List<string>();
        var warnings = new List<string>();
        foreach (var (section, type) in Sections.Concat(DiscoveredSections()).DistinctBy(s => s.Key, StringComparer.OrdinalIgnoreCase))
        {
            if (type is null)
            {
                continue;
            }

            object options;
            try
            {
                options = configuration.GetSection(section).Get(type) ?? Activator.CreateInstance(type)!;
            }
            catch (InvalidOperationException ex)
            {
                // The binder names the key and the type: "Failed to convert configuration value at 'Events:Capacity' to type 'System.Int32'."
                errors.Add(Explain(ex));
                continue;
            }

            Validate(section, options, configuration, errors);
            if (options is SubmissionOptions submission)
            {
                // Cross-field rules (endpoints, overlapping ports, certificate files); its per-field
                // messages repeat what Validate said with a full key path, so only the rest is kept.
                var cross = new SubmissionOptionsValidator().Validate(null, submission).Failures ?? [];
                errors.AddRange(cross.Where(f => !f.Contains(": The field ", StringComparison.Ordinal)));
            }

            if (options is Analytics.Submission.Delivery.DeliveryOptions delivery)
            {
                // Next hops, routes, backoff order, AUTH without TLS: rules no attribute can say.
                var cross = new Analytics.Submission.Delivery.DeliveryOptionsValidator().Validate(null, delivery).Failures ?? [];
                errors.AddRange(cross.Where(f => !f.Contains(": The field ", StringComparison.Ordinal)));
            }

            if (options is DetectionOptions detection && !string.IsNullOrWhiteSpace(detection.ModelDirectory) && !Directory.Exists(detection.ModelDirectory))
            {
                warnings.Add($"Detection:ModelDirectory: '{detection.ModelDirectory}' does not exist; the scorer uses the rule baseline until a model is there.");
            }
        }

        if (fileOnly is not null)
        {
            foreach (var top in fileOnly.GetChildren())
            {
                if (!Sections.TryGetValue(top.Key, out var type) && !DiscoveredSections().Any(s => string.Equals(s.Key, top.Key, StringComparison.OrdinalIgnoreCase)))
                {
                    warnings.Add($"{top.Key}: unknown section (serve ignores it). Known: {string.Join(", ", Sections.Keys.Where(k => k is not ("DATA" or "Logging" or "Kestrel" or "AllowedHosts")))}.");
                    continue;
                }

                type ??= DiscoveredSections().FirstOrDefault(s => string.Equals(s.Key, top.Key, StringComparison.OrdinalIgnoreCase)).Value;
                if (type is not null)
                {
                    UnknownKeys(top, type, warnings);
                }
            }
        }

        return (errors, warnings);
    }

    private static IConfiguration FileOnly(string path) => new ConfigurationBuilder().AddJsonFile(Path.GetFullPath(path), optional: false).Build();

    /// <summary>DataAnnotations on <paramref name="options"/> and on every nested options object, with full key paths.</summary>
    private static void Validate(string path, object options, IConfiguration configuration, List<string> errors)
    {
        var results = new List<ValidationResult>();
        Validator.TryValidateObject(options, new ValidationContext(options), results, validateAllProperties: true);
        foreach (var result in results)
        {
            foreach (var member in result.MemberNames.DefaultIfEmpty(""))
            {
                var key = member.Length == 0 ? path : path + ":" + member;
                var range = options.GetType().GetProperty(member)?.GetCustomAttribute<RangeAttribute>();
                var allowed = range is null || result.ErrorMessage?.Contains("between", StringComparison.Ordinal) == true ? "" : $" Allowed: {range.Minimum} to {range.Maximum}.";
                var given = configuration[key] is { } value ? $" Configured: '{value}'." : "";
                errors.Add($"{key}: {result.ErrorMessage}{allowed}{given}");
            }
        }

        foreach (var property in options.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance))
        {
            if (IsOptionsObject(property.PropertyType) && property.GetIndexParameters().Length == 0 && property.GetValue(options) is { } nested)
            {
                Validate(path + ":" + property.Name, nested, configuration, errors);
            }
        }
    }

    private static void UnknownKeys(IConfigurationSection section, Type type, List<string> warnings)
    {
        foreach (var child in section.GetChildren())
        {
            var property = type.GetProperty(child.Key, BindingFlags.Public | BindingFlags.Instance | BindingFlags.IgnoreCase);
            if (property is null || !property.CanWrite)
            {
                var known = type.GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.CanWrite).Select(p => p.Name);
                warnings.Add($"{child.Path}: unknown key (ignored). Keys of {section.Path}: {string.Join(", ", known)}.");
            }
            else if (IsOptionsObject(property.PropertyType))
            {
                UnknownKeys(child, property.PropertyType, warnings);
            }
        }
    }

    // Nested options are our own classes; strings, lists, dictionaries and time spans are leaves.
    private static bool IsOptionsObject(Type type) =>
        type.IsClass && type != typeof(string) && !typeof(IEnumerable).IsAssignableFrom(type) && type.Namespace?.StartsWith("Analytics", StringComparison.Ordinal) == true;

    private static string Explain(InvalidOperationException ex)
    {
        // "Failed to convert configuration value 'lots' at 'Events:Capacity' to type 'System.Int32'."
        var match = BinderFailure().Match(ex.Message);
        if (!match.Success)
        {
            return ex.Message;
        }

        var type = match.Groups["type"].Value;
        var hint = type[(type.LastIndexOf('.') + 1)..] switch
        {
            "Int32" or "Int64" or "UInt32" or "UInt64" => "a whole number",
            "Double" or "Single" or "Decimal" => "a number",
            "Boolean" => "true or false",
            "TimeSpan" => "a duration [d.]hh:mm:ss[.fff], e.g. 00:00:30",
            var other => other,
        };
        return $"{match.Groups["key"].Value}: '{match.Groups["value"].Value}' is not {hint}.";
    }

    [GeneratedRegex(@"value '(?<value>.*)' at '(?<key>[^']+)' to type '(?<type>[^']+)'", RegexOptions.Singleline)]
    private static partial Regex BinderFailure();

    /// <summary>
    /// Options classes of other parts (limits, review console) declare <c>public const string SectionName</c>:
    /// they are validated here as soon as they exist, without this file knowing them.
    /// </summary>
    private static IEnumerable<KeyValuePair<string, Type?>> DiscoveredSections() => Discovered.Value;

    private static readonly Lazy<List<KeyValuePair<string, Type?>>> Discovered = new(() => [.. Discover()]);

    private static IEnumerable<KeyValuePair<string, Type?>> Discover()
    {
        var self = typeof(ConfigCommand).Assembly;
        var assemblies = self.GetReferencedAssemblies().Where(a => a.Name?.StartsWith("Analytics.", StringComparison.Ordinal) == true).Select(Assembly.Load).Append(self);
        foreach (var assembly in assemblies)
        {
            Type[] types;
            try
            {
                types = assembly.GetTypes();
            }
            catch (ReflectionTypeLoadException ex)
            {
                types = ex.Types.OfType<Type>().ToArray();
            }

            foreach (var type in types)
            {
                if (type.IsClass && !type.IsAbstract && type.Name.EndsWith("Options", StringComparison.Ordinal) && type.GetConstructor(Type.EmptyTypes) is not null &&
                    type.GetField("SectionName", BindingFlags.Public | BindingFlags.Static) is { IsLiteral: true } field && field.GetRawConstantValue() is string name &&
                    !name.Contains(':', StringComparison.Ordinal))
                {
                    yield return new(name, type);
                }
            }
        }
    }
}
