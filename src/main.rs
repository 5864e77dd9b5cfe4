fn main() {
    println!("rewind: work in progress");
}
