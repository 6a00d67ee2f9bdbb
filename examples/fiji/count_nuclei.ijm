// Count the nuclei in every image of a task's input folder (an ImageJ macro).
//
// Run by the `fiji` recipe as Distributed-Fiji runs its scripts: one argument string of
// key='value' pairs, here
//   input='<folder with the task's images>', output='<folder for the results>',
//   sigma='2', min_size='20', channel='D', Position='002'
// For every TIFF under `input` (searched recursively) it writes into `output`:
//   <image>_particles.csv  one row per particle: Area (pixels), Mean, X, Y, Perim., Circ.
//   <image>_mask.png       the binary mask the particles were measured on
// and finally summary.csv: one row per image with its particle count and mean area.
// Steps per image: Gaussian blur (sigma), Otsu threshold, Analyze Particles of at least
// min_size pixels. Any problem ends the macro with exit("…"), which fails the task.

requires("1.52a");
setBatchMode(true);

parseArguments(getArgument());
input = requiredArgument("input");
output = requiredArgument("output");
sigma = parseFloat(requiredArgument("sigma"));
minSize = parseFloat(requiredArgument("min_size"));
if (isNaN(sigma) || sigma <= 0) exit("sigma must be a number > 0, not " + List.get("sigma"));
if (isNaN(minSize) || minSize < 0) exit("min_size must be a number >= 0");
if (!File.isDirectory(input)) exit("the input folder " + input + " does not exist");
File.makeDirectory(output);

images = newArray(0);
images = findImages(input, images);
if (images.length == 0) exit("no TIFF images under " + input);

summary = "image,particles,mean_area_px,total_area_px\n";
for (i = 0; i < images.length; i++) {
    summary = summary + countNuclei(images[i], output, sigma, minSize) + "\n";
}
File.saveString(summary, output + File.separator + "summary.csv");
print("count_nuclei: " + images.length + " image(s) -> " + output);

// Measures one image and writes its CSV and mask; returns its summary.csv row.
function countNuclei(path, output, sigma, minSize) {
    open(path);
    original = getTitle();
    stem = File.nameWithoutExtension;
    // Areas in pixels, whatever spatial calibration the file carries.
    run("Set Scale...", "distance=0 known=0 unit=pixel");
    run("Duplicate...", "title=mask");
    run("Gaussian Blur...", "sigma=" + sigma);
    setAutoThreshold("Otsu dark");
    setOption("BlackBackground", true);
    run("Convert to Mask");
    run("Set Measurements...", "area mean centroid perimeter shape redirect=[" + original + "] decimal=3");
    run("Analyze Particles...", "size=" + minSize + "-Infinity pixel display clear");
    count = nResults;
    total = 0;
    for (row = 0; row < count; row++) total = total + getResult("Area", row);
    saveAs("Results", output + File.separator + stem + "_particles.csv");
    selectWindow("mask");
    saveAs("PNG", output + File.separator + stem + "_mask.png");
    run("Close All");
    run("Clear Results");
    mean = 0;
    if (count > 0) mean = total / count;
    print(stem + ": " + count + " particles");
    return stem + "," + count + "," + d2s(mean, 3) + "," + d2s(total, 0);
}

// Every .tif/.tiff file under `folder`, in name order, appended to `found`.
function findImages(folder, found) {
    names = getFileList(folder);
    Array.sort(names);
    for (i = 0; i < names.length; i++) {
        path = folder + File.separator + names[i];
        if (endsWith(names[i], "/")) {
            found = findImages(substring(path, 0, lengthOf(path) - 1), found);
        } else {
            lower = toLowerCase(names[i]);
            if (endsWith(lower, ".tif") || endsWith(lower, ".tiff"))
                found = Array.concat(found, path);
        }
    }
    return found;
}

// Reads Distributed-Fiji's "key='value', key='value'" string into the List functions.
// Values may hold commas and spaces: only the quotes delimit them.
function parseArguments(text) {
    List.clear();
    n = lengthOf(text);
    i = 0;
    while (i < n) {
        c = substring(text, i, i + 1);
        if (c == " " || c == ",") {
            i++;
        } else {
            equals = indexOf(text, "=", i);
            if (equals < 0) exit("bad argument string, no '=' after position " + i + ": " + text);
            key = substring(text, i, equals);
            if (substring(text, equals + 1, equals + 2) != "'")
                exit("bad argument string, the value of " + key + " is not quoted: " + text);
            quoteEnd = indexOf(text, "'", equals + 2);
            if (quoteEnd < 0) exit("bad argument string, unclosed quote after " + key + ": " + text);
            List.set(key, substring(text, equals + 2, quoteEnd));
            i = quoteEnd + 1;
        }
    }
}

function requiredArgument(key) {
    value = List.get(key);
    if (value == "") exit("the argument " + key + " is missing (got: " + getArgument() + ")");
    return value;
}
