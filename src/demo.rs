pub struct Demo;
